"""Hostile input to serving: every body, parameter and header a client can send is a 2xx or a 4xx JSON error.

The app serves a loaded model (so a good body would be predicted) and its prediction writer is a recorder:
each refused request must leave it empty.
"""

from __future__ import annotations

import json

import pytest

from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.json_request import MAX_JSON_DEPTH

ROW = dict(zip(FEATURES, generate_frame(1, seed=3)[list(FEATURES)].iloc[0].tolist(), strict=True))
BIG_INT = "9" * 400  # a 400-digit integer: valid JSON, beyond float64


def _row_with(field: str, raw_value: str) -> str:
    """ROW as JSON text with one value replaced by raw JSON text (numbers json.dumps cannot write)."""
    return json.dumps(ROW).replace(json.dumps(ROW[field]), raw_value, 1)


def _split(columns, data, **extra) -> str:
    return json.dumps({"dataframe_split": {"columns": columns, "data": data, **extra}})


class RecordingWriter:
    """Stands in for the prediction writer: keeps what predict queued."""

    def __init__(self) -> None:
        self.batches: list = []

    def add(self, batch) -> None:
        self.batches.append(batch)


@pytest.fixture
def writer(app, client, registry, admin, fit) -> RecordingWriter:
    """A served model and a recording writer in place of the real one."""
    registry.add("1", fit())
    assert client.get("/loadModel/", headers=admin).status_code == 200
    recorder = RecordingWriter()
    app.extensions["prediction_writer"] = recorder
    return recorder


ROWS_10 = json.dumps([ROW] * 10)
BAD_BODIES = {
    # Nesting: the 100,000 "[" and deep objects, in every accepted shape.
    "100k [": ("[" * 100_000, 400, "JSON_TOO_DEEP"),
    "100k {": ('{"a":' * 100_000, 400, "JSON_TOO_DEEP"),
    "deep rows": ('{"rows": ' + "[" * 50 + "]" * 50 + "}", 400, "JSON_TOO_DEEP"),
    "deep value": (_row_with("pH", "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)), 400, "JSON_TOO_DEEP"),
    # Huge numbers: the 400-digit integer, in each shape and on the block path (>= 8 rows).
    "400-digit row": (_row_with("pH", BIG_INT), 422, "INVALID_ROWS"),
    "400-digit batch": (ROWS_10.replace(json.dumps(ROW["pH"]), BIG_INT), 422, "INVALID_ROWS"),
    "400-digit records": (
        json.dumps({"dataframe_records": [ROW] * 10}).replace(json.dumps(ROW["alcohol"]), BIG_INT), 422,
        "INVALID_ROWS",
    ),
    "400-digit split": (
        _split(list(ROW), [list(ROW.values())]).replace(json.dumps(ROW["alcohol"]), BIG_INT, 1), 422,
        "INVALID_ROWS",
    ),
    "negative 400 digits": (_row_with("pH", "-" + BIG_INT), 422, "INVALID_ROWS"),
    "1e400": (_row_with("pH", "1e400"), 422, "INVALID_ROWS"),
    "NaN": (_row_with("pH", "NaN"), 422, "INVALID_ROWS"),
    "-Infinity": (_row_with("pH", "-Infinity"), 422, "INVALID_ROWS"),
    "5000 digits": (_row_with("pH", "9" * 5000), 400, "INVALID_JSON"),
    "400-digit quality": (_row_with("pH", json.dumps(ROW["pH"]) + ', "quality": ' + BIG_INT), 422, "INVALID_ROWS"),
    # Wrong types anywhere.
    "null body": ("null", 400, "INVALID_BODY"),
    "true body": ("true", 400, "INVALID_BODY"),
    "number body": ("7", 400, "INVALID_BODY"),
    "string body": ('"rows"', 400, "INVALID_BODY"),
    "empty list": ("[]", 400, "NO_ROWS"),
    "list of scalars": ("[1, 2]", 422, "INVALID_ROWS"),
    "list of lists": ("[[1, 2], [3]]", 422, "INVALID_ROWS"),
    "list of nulls": ("[null]", 422, "INVALID_ROWS"),
    "rows null": ('{"rows": null}', 400, "INVALID_BODY"),
    "rows object": ('{"rows": {"pH": 3}}', 400, "INVALID_BODY"),
    "rows string": ('{"rows": "x"}', 400, "INVALID_BODY"),
    "records object": ('{"dataframe_records": {}}', 400, "INVALID_BODY"),
    "boolean value": (_row_with("pH", "true"), 422, "INVALID_ROWS"),
    "null value": (_row_with("pH", "null"), 422, "INVALID_ROWS"),
    "string value": (_row_with("pH", '"3.1"'), 422, "INVALID_ROWS"),
    "object value": (_row_with("pH", '{"value": 3.1}'), 422, "INVALID_ROWS"),
    "list value": (_row_with("pH", "[3.1]"), 422, "INVALID_ROWS"),
    "boolean in a batch": (ROWS_10.replace(json.dumps(ROW["pH"]), "false", 1), 422, "INVALID_ROWS"),
    "unknown field": (json.dumps(ROW | {"colour": "red"}), 422, "INVALID_ROWS"),
    "missing field": (json.dumps({k: v for k, v in ROW.items() if k != "pH"}), 422, "INVALID_ROWS"),
    # dataframe_split with bad columns, data and index (the issue's: columns holding a list).
    "split columns with a list": (_split([["pH"], *list(ROW)[1:]], [list(ROW.values())]), 400, "INVALID_BODY"),
    "split columns with an object": (_split([{"a": 1}, *list(ROW)[1:]], [list(ROW.values())]), 400, "INVALID_BODY"),
    "split columns with null": (_split([None, *list(ROW)[1:]], [list(ROW.values())]), 400, "INVALID_BODY"),
    "split columns with a number": (_split([1, *list(ROW)[1:]], [list(ROW.values())]), 400, "INVALID_BODY"),
    "split columns twice": (_split([*list(ROW), "pH"], [[*ROW.values(), 3.0]]), 400, "INVALID_BODY"),
    "split columns string": (_split("pH", [[3.0]]), 400, "INVALID_BODY"),
    "split data object": (_split(list(ROW), {"0": list(ROW.values())}), 400, "INVALID_BODY"),
    "split data of scalars": (_split(list(ROW), list(ROW.values())), 400, "INVALID_BODY"),
    "split short data row": (_split(list(ROW), [list(ROW.values())[:-1]]), 400, "INVALID_BODY"),
    "split index number": (_split(list(ROW), [list(ROW.values())], index=0), 400, "INVALID_BODY"),
    "split index too long": (_split(list(ROW), [list(ROW.values())], index=[0, 1]), 400, "INVALID_BODY"),
    "split not an object": ('{"dataframe_split": [[1]]}', 400, "INVALID_BODY"),
    "split null": ('{"dataframe_split": null}', 400, "INVALID_BODY"),
    "split boolean value": (_split(list(ROW), [[True, *list(ROW.values())[1:]]]), 422, "INVALID_ROWS"),
    # Not JSON at all.
    "truncated": ('{"rows": [', 400, "INVALID_JSON"),
    "empty": ("", 400, "INVALID_JSON"),
    "not UTF-8": (b'{"pH": "\xff"}', 400, "INVALID_JSON"),
}


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_hostile_bodies_are_a_4xx_and_predict_nothing(client, writer, body, status, code, assert_json_error):
    error = assert_json_error(client.post("/predict", data=body, content_type="application/json"), status, code)
    assert writer.batches == []
    if code == "INVALID_ROWS":
        assert error["details"]["invalid_rows"] and "nothing was stored" in error["message"]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_hostile_bodies_to_the_original_endpoint_are_a_4xx(client, writer, body, status, code, assert_json_error):
    response = client.post("/predictDummy/", data=body, content_type="application/json")
    # /predictDummy/ takes one row object only: a batch shape is refused as a body before its rows are read.
    expected = {(status, code), (400, "INVALID_BODY")}
    assert (response.status_code, response.get_json()["error_code"]) in expected
    assert_json_error(response, response.status_code, response.get_json()["error_code"])
    assert writer.batches == []


def test_an_overflowing_value_is_named_by_its_field(client, writer, assert_json_error):
    error = assert_json_error(
        client.post("/predict", data=_row_with("alcohol", BIG_INT), content_type="application/json"),
        422, "INVALID_ROWS",
    )
    assert error["details"]["invalid_rows"] == [{"row": 0, "errors": {"alcohol": "must be a finite number"}}]


def test_the_same_rows_well_formed_are_predicted(client, writer):
    """The control: the recorder sees what a good request queues, so its emptiness above means something."""
    assert client.post("/predict", data=ROWS_10, content_type="application/json").status_code == 200
    assert client.post("/predict", data=_split(list(ROW), [list(ROW.values())], index=[7]),
                       content_type="application/json").status_code == 200
    assert len(writer.batches) == 2


@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_a_415(client, writer, content_type, assert_json_error):
    response = client.post("/predict", data=json.dumps(ROW), content_type=content_type)
    assert_json_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert writer.batches == []


@pytest.mark.parametrize(
    "n",
    [
        "\u00b2", "\u0663", "\uff15", "\u2075", "1\u0663",  # superscript 2, Arabic-Indic 3, fullwidth 5, superscript 5
        "0", "1001", "-1", "+5", "1.0", "1e3", "abc", "", "9" * 5000, " 5",
    ],
)
@pytest.mark.parametrize("path", ["/data/latest", "/getLatestData/"])
def test_latest_refuses_any_n_but_ascii_digits_in_range(client, path, n, assert_json_error):
    # MongoDB is unreachable in unit tests: a 400 (not 503) shows the parameter was refused before any read.
    error = assert_json_error(client.get(path, query_string={"n": n}), 400, "INVALID_PARAMETER")
    assert "from 1 to 1000" in error["message"]


@pytest.mark.parametrize(
    "request_id", ['a"b', "\\", "x" * 129, "é", "a b", "a\tb", "<script>", "x" * 100_000]
)
def test_a_hostile_request_id_is_replaced(client, request_id):
    response = client.get("/health", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] != request_id
    assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("header", ["Authorization", "X-Admin-Token", "Content-Type", "X-Anything"])
@pytest.mark.parametrize("filler", ["x", "é"])
def test_huge_header_values_are_a_4xx_or_ignored(client, writer, header, filler):
    value = filler * 100_000
    if header == "Authorization":
        value = "Bearer " + value
    reload = client.post("/model/reload", headers={header: value})
    assert reload.status_code in {401, 403}
    assert reload.get_json()["error_code"] in {"AUTH_REQUIRED", "AUTH_INVALID"}
    predict = client.post("/predict", data=json.dumps(ROW), headers={header: value},
                          content_type=None if header == "Content-Type" else "application/json")
    assert predict.status_code in {200, 415}


def test_ready_names_no_host_or_driver_text(client):
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["mongodb"] == {"ok": False, "detail": "unreachable"}
    text = response.get_data(as_text=True)
    assert "127.0.0.1" not in text and "Timeout" not in text and "topology" not in text.lower()


@pytest.mark.parametrize(
    ("exc", "word"),
    [
        (ConnectionRefusedError("db-7.internal:27017 refused"), "unreachable"),
        (TimeoutError("db-7.internal:27017 timed out after 2000 ms"), "timeout"),
        (RuntimeError("db-7.internal:27017 said no"), "failed"),
    ],
)
def test_a_readiness_check_that_raises_is_a_generic_word_and_a_log_line(app, client, caplog, exc, word):
    from mlstack_core.appkit import add_readiness_check

    def check():
        raise exc

    add_readiness_check(app, "dependency", check)
    body = client.get("/ready").get_json()
    assert body["checks"]["dependency"] == {"ok": False, "detail": word}
    assert "db-7" not in json.dumps(body)
    assert "db-7.internal:27017" in caplog.text
