"""Hostile input to ETL's /ingest: every body is a 2xx or a 4xx JSON error, and a refused one stores nothing.

Storing is watched by a spy on RowsRepository.insert_batch that records the call and then fails like a down
database (503): a valid control request reaches it, every hostile one must not.
"""

from __future__ import annotations

import io
import json

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.rows import RowsRepository

COLUMNS = [*FEATURES, "quality"]
ROWS = generate_frame(3, seed=11).to_dict("records")
BIG_INT = "9" * 400


def _csv(rows=ROWS, sep=",") -> bytes:
    header = sep.join(f'"{c}"' for c in COLUMNS)
    lines = [sep.join(str(r[c]) for c in COLUMNS) for r in rows]
    return ("\n".join([header, *lines]) + "\n").encode()


def _with_cell(text: bytes, value: bytes) -> bytes:
    """The CSV with the first data row's first value replaced."""
    header, first, rest = text.split(b"\n", 2)
    return b"\n".join([header, value + first[first.index(b","):], rest])


@pytest.fixture
def stored(monkeypatch) -> list:
    """Calls that reached RowsRepository.insert_batch (each answered like a down database)."""
    calls: list = []

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        raise ServerSelectionTimeoutError("spy: the database is not part of this test")

    monkeypatch.setattr(RowsRepository, "insert_batch", spy)
    return calls


GOOD = _csv()
BAD_CSV = {
    "not UTF-8": (GOOD + b"\xff\xfe\n", 400, "INVALID_CSV"),
    "latin-1 cell": (_with_cell(GOOD, "é".encode("latin-1")), 400, "INVALID_CSV"),
    "NUL byte": (_with_cell(GOOD, b"7\x00"), 400, "INVALID_CSV"),
    "field over the csv limit": (_with_cell(GOOD, b"7" * 200_000), 400, "INVALID_CSV"),
    "header field over the csv limit": (b"x" * 200_000 + b"\n1\n", 400, "INVALID_CSV"),
    "a row with an extra value": (GOOD.rstrip(b"\n") + b",9\n", 400, "INVALID_CSV"),
    "a row with too few values": (GOOD + b"7.0,0.3\n", 400, "INVALID_CSV"),
    "empty file": (b"", 400, "INVALID_CSV"),
    "blank lines only": (b"\n\n\n", 400, "INVALID_CSV"),
    "only a header": (GOOD.split(b"\n")[0] + b"\n", 400, "NO_ROWS"),
    "only a header with a BOM": (b"\xef\xbb\xbf" + GOOD.split(b"\n")[0], 400, "NO_ROWS"),
    "a column twice": (b'"pH","pH"\n3,3\n', 400, "INVALID_CSV"),
    "decimal commas in a ';' file": (_csv(sep=";").replace(b".", b","), 422, "INVALID_ROWS"),
    "';' values under a ',' header": (
        GOOD.split(b"\n")[0] + b"\n" + _csv(sep=";").split(b"\n")[1] + b"\n", 400, "INVALID_CSV"
    ),
    "Unicode digits": (_with_cell(GOOD, "\u0667".encode()), 422, "INVALID_ROWS"),  # Arabic-Indic 7
    "400-digit number": (_with_cell(GOOD, BIG_INT.encode()), 422, "INVALID_ROWS"),
    "1e400": (_with_cell(GOOD, b"1e400"), 422, "INVALID_ROWS"),
    "nan": (_with_cell(GOOD, b"nan"), 422, "INVALID_ROWS"),
    "a word": (_with_cell(GOOD, b"seven"), 422, "INVALID_ROWS"),
    "an empty cell": (_with_cell(GOOD, b""), 422, "INVALID_ROWS"),
    "no header, just numbers": (b"7.0,0.3\n7.1,0.2\n", 422, "INVALID_ROWS"),
    "binary garbage": (bytes(range(256)) * 10, 400, "INVALID_CSV"),
}


@pytest.mark.parametrize(("data", "status", "code"), BAD_CSV.values(), ids=BAD_CSV.keys())
def test_bad_csv_body_is_a_4xx_and_stores_nothing(client, admin, stored, data, status, code, assert_json_error):
    response = client.post("/ingest", data=data, content_type="text/csv", headers=admin)
    error = assert_json_error(response, status, code)
    assert "nothing was stored" in error["message"] or code == "NO_ROWS"
    assert stored == []


@pytest.mark.parametrize(("data", "status", "code"), BAD_CSV.values(), ids=BAD_CSV.keys())
def test_bad_csv_upload_is_a_4xx_and_stores_nothing(client, admin, stored, data, status, code, assert_json_error):
    upload = {"file": (io.BytesIO(data), "rows.csv")}
    response = client.post("/ingest", data=upload, content_type="multipart/form-data", headers=admin)
    assert_json_error(response, status, code)
    assert stored == []


def test_csv_over_the_row_limit_is_a_413(client, admin, stored, assert_json_error):
    data = _csv(generate_frame(10_001, seed=2).to_dict("records"))
    assert_json_error(client.post("/ingest", data=data, content_type="text/csv", headers=admin), 413, "TOO_MANY_ROWS")
    assert stored == []


@pytest.mark.parametrize("sep", [",", ";"])
@pytest.mark.parametrize("kind", ["body", "upload"])
def test_good_csv_reaches_the_database(client, admin, stored, sep, kind, assert_json_error):
    """The control: the spy sees a good file, so its emptiness elsewhere means something."""
    data = _csv(sep=sep)
    if kind == "body":
        response = client.post("/ingest", data=data, content_type="text/csv", headers=admin)
    else:
        upload = {"file": (io.BytesIO(b"\xef\xbb\xbf" + data), "rows.csv")}
        response = client.post("/ingest", data=upload, content_type="multipart/form-data", headers=admin)
    assert_json_error(response, 503, "DATABASE_UNAVAILABLE")
    assert len(stored) == 1


def test_multipart_without_a_file_is_a_400(client, admin, stored, assert_json_error):
    response = client.post(
        "/ingest", data={"rows": GOOD.decode()}, content_type="multipart/form-data", headers=admin
    )
    assert_json_error(response, 400, "NO_FILE")
    assert stored == []


def test_multipart_with_the_file_under_another_name_is_a_400(client, admin, stored, assert_json_error):
    upload = {"upload": (io.BytesIO(GOOD), "rows.csv")}
    response = client.post("/ingest", data=upload, content_type="multipart/form-data", headers=admin)
    assert_json_error(response, 400, "NO_FILE")
    assert stored == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\n\r\n\r\n--xyz--\r\n"),
        ("multipart/form-data; boundary=xyz",  # never closed: the parser drops the part
         b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n' + GOOD),
        ("multipart/form-data; boundary=" + "x" * 5000, b"--x\r\n"),
    ],
    ids=["no boundary", "no parts", "empty part", "unclosed part", "huge boundary"],
)
def test_malformed_multipart_is_a_400(client, admin, stored, content_type, body, assert_json_error):
    response = client.post("/ingest", data=body, headers=admin | {"Content-Type": content_type})
    assert_json_error(response, 400, "NO_FILE")
    assert stored == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", "image/png", None]
)
def test_other_content_types_are_a_415(client, admin, stored, content_type, assert_json_error):
    response = client.post("/ingest", data=GOOD, content_type=content_type, headers=admin)
    assert_json_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert stored == []


def _json_row(field: str, raw: str) -> str:
    return json.dumps(ROWS[0]).replace(json.dumps(ROWS[0][field]), raw, 1)


BAD_JSON = {
    "100k [": ("[" * 100_000, 400, "JSON_TOO_DEEP"),
    "deep rows": ('{"rows": ' + "[" * 40 + "]" * 40 + "}", 400, "JSON_TOO_DEEP"),
    "400-digit value": (_json_row("pH", BIG_INT), 422, "INVALID_ROWS"),
    "400-digit quality": (_json_row("quality", BIG_INT), 422, "INVALID_ROWS"),
    "5000 digits": (_json_row("pH", "9" * 5000), 400, "INVALID_JSON"),
    "split columns with a list": (
        json.dumps({"dataframe_split": {"columns": [COLUMNS[:2], *COLUMNS[2:]], "data": [[1] * 12]}}), 400,
        "INVALID_BODY",
    ),
    "split index wrong": (
        json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1] * 12], "index": {}}}), 400, "INVALID_BODY"
    ),
    "null": ("null", 400, "INVALID_BODY"),
    "boolean value": (_json_row("pH", "false"), 422, "INVALID_ROWS"),
    "object value": (_json_row("pH", '{"$gt": 0}'), 422, "INVALID_ROWS"),
    "operator key": (json.dumps(ROWS[0] | {"$set": {"quality": 9}}), 422, "INVALID_ROWS"),
    "truncated": ('[{"pH": ', 400, "INVALID_JSON"),
}


@pytest.mark.parametrize(("body", "status", "code"), BAD_JSON.values(), ids=BAD_JSON.keys())
def test_bad_json_is_a_4xx_and_stores_nothing(client, admin, stored, body, status, code, assert_json_error):
    response = client.post("/ingest", data=body, content_type="application/json", headers=admin)
    assert_json_error(response, status, code)
    assert stored == []


def test_a_huge_token_header_is_a_403(client, stored, assert_json_error):
    response = client.post("/ingest", data=GOOD, content_type="text/csv",
                           headers={"Authorization": "Bearer " + "é" * 100_000})
    assert_json_error(response, 403, "AUTH_INVALID")
    assert stored == []


def test_ready_names_no_host_or_driver_text(client):
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["mongodb"] == {"ok": False, "detail": "unreachable"}
    assert "127.0.0.1" not in response.get_data(as_text=True)
