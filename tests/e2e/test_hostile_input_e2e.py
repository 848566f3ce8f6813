"""Hostile input through the real Nginx and Gunicorn: 4xx JSON errors that change nothing, never a 5xx.

Two fixtures, each started once for the module:
- the three services' Nginx templates in front of the harness's tiny Gunicorn app: Nginx's own error bodies
  (400, 413, 414, 502/503) stay valid JSON, with the request id it also passes upstream, whatever
  X-Request-ID arrives;
- serving and ETL (real FerretDB, MLflow, S3; two Gunicorn workers each, Nginx in front): the bodies of
  issue #10 and the other hostile classes get a 4xx in the one error shape and store nothing (counted in
  MongoDB).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pymongo import MongoClient

from devstack.servers import NGINX_TEMPLATE, GunicornApp, Nginx, nginx_settings
from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.request_id import PATTERN as REQUEST_ID_PATTERN

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TESTS_DATA = REPO / "scripts" / "devstack" / "tests_data"
# Each service's Nginx: the shared template with the values of <folder>/nginx/nginx.env.
FOLDERS = {"serving": "serving-flask", "etl": "etl-flask-scheduler", "training": "training-flask-scheduler"}
BODY_LIMITS = {"serving": 8, "etl": 16, "training": 1}  # client_max_body_size, MiB (pinned: a test checks it)
TIMEOUT = 15

# Each must not reach the JSON bodies or the app: quotes and backslashes would break the JSON, the rest are
# outside the ids the app accepts. requests sends str header values as Latin-1; bytes go as they are.
HOSTILE_IDS = {
    "quote": 'a"b',
    "backslash": "\\",
    "json breakout": '", "error_code": "OK',
    "129 chars": "x" * 129,
    "5000 chars": "x" * 5000,
    "latin-1": "é",
    "utf-8 bytes": "日本".encode(),
    "raw byte": b"\xff",
    "space": "a b",
    "tab": "a\tb",
    "braces": "}{",
    "nginx variable": "$request_id",
}
GOOD_ID = "client-id_1.2:3"


def _assert_nginx_json(response: requests.Response, status: int, code: str) -> dict:
    """An Nginx error in the apps' shape whose request id is the one Nginx sent upstream (a 32-hex id here)."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.content)  # raises on an invalid body: the point of these tests
    assert body["error_code"] == code and body["message"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert response.headers["X-Request-ID"] == body["request_id"]
    return body


def test_the_template_accepts_exactly_the_apps_request_id_pattern():
    """The Nginx map and mlstack_core.request_id hold one pattern: app and Nginx agree on every id."""
    text = NGINX_TEMPLATE.read_text()
    assert f'"~^{REQUEST_ID_PATTERN}$"   $http_x_request_id;' in text
    assert "default                       $request_id;" in text


def test_body_limits_are_the_apps_settings():
    for name, folder in FOLDERS.items():
        assert nginx_settings(folder)["NGINX_MAX_BODY"] == f"{BODY_LIMITS[name]}m", name


@pytest.fixture(scope="module")
def nginx_fronts(devstack_workdir: Path) -> Iterator[tuple[GunicornApp, dict[str, Nginx]]]:
    """The tiny echo app under Gunicorn, behind each service's Nginx template."""
    workdir = devstack_workdir / "hostile-nginx"
    app = GunicornApp("echo", "hello_app:app", env={"PYTHONPATH": str(TESTS_DATA)}, workdir=workdir / "echo",
                      workers=1)
    fronts = {
        name: Nginx.for_app(f"{name}-nginx", folder, upstream=f"{app.host}:{app.port}", workdir=workdir / name)
        for name, folder in FOLDERS.items()
    }
    try:
        app.start()
        for nginx in fronts.values():
            nginx.start()
        yield app, fronts
    finally:
        for nginx in fronts.values():
            nginx.stop()
        app.stop()


@pytest.mark.parametrize("service", FOLDERS)
@pytest.mark.parametrize("request_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
def test_a_hostile_request_id_is_replaced_before_the_app_sees_it(nginx_fronts, service, request_id):
    _, fronts = nginx_fronts
    echoed = requests.get(f"{fronts[service].url}/echo", headers={"X-Request-ID": request_id}, timeout=TIMEOUT)
    assert echoed.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", echoed.json()["request_id"])


@pytest.mark.parametrize("service", FOLDERS)
def test_the_access_log_is_json_lines_with_the_request_id(nginx_fronts, service):
    _, fronts = nginx_fronts
    rid = f"access-log-{service}"
    hostile = requests.get(f"{fronts[service].url}/echo?q=%22x", headers={"X-Request-ID": 'a"b'}, timeout=TIMEOUT)
    assert requests.get(f"{fronts[service].url}/echo", headers={"X-Request-ID": rid}, timeout=TIMEOUT).ok
    # escape=json: a quote in the URI stays inside its string; every line parses.
    lines = [json.loads(line) for line in fronts[service].access_log.read_text().splitlines()]
    mine = [line for line in lines if line["request_id"] == rid]
    assert len(mine) == 1 and mine[0]["status"] == 200 and mine[0]["method"] == "GET", mine
    assert mine[0]["uri"] == "/echo" and isinstance(mine[0]["request_time"], float)
    assert any(line["request_id"] == hostile.json()["request_id"] and line["uri"] == '/echo?q=%22x'
               for line in lines)


@pytest.mark.parametrize("service", FOLDERS)
def test_a_plain_request_id_is_kept(nginx_fronts, service):
    _, fronts = nginx_fronts
    echoed = requests.get(f"{fronts[service].url}/echo", headers={"X-Request-ID": GOOD_ID}, timeout=TIMEOUT)
    assert echoed.json()["request_id"] == GOOD_ID
    too_large = requests.post(f"{fronts[service].url}/echo", data=b"x" * ((BODY_LIMITS[service] << 20) + 1),
                              headers={"X-Request-ID": GOOD_ID}, timeout=TIMEOUT)
    assert json.loads(too_large.content)["request_id"] == GOOD_ID == too_large.headers["X-Request-ID"]


@pytest.mark.parametrize("service", FOLDERS)
@pytest.mark.parametrize("request_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
def test_nginx_413_is_valid_json_whatever_the_request_id(nginx_fronts, service, request_id):
    _, fronts = nginx_fronts
    response = requests.post(
        f"{fronts[service].url}/predict", data=b"x" * ((BODY_LIMITS[service] << 20) + 1),
        headers={"X-Request-ID": request_id, "Content-Type": "application/json"}, timeout=TIMEOUT,
    )
    _assert_nginx_json(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("service", FOLDERS)
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-ID": "x" * 10_000},  # one header line over large_client_header_buffers' 8k
        {"X-Anything": "é" * 9000},
        {f"X-Filler-{i}": "y" * 7000 for i in range(6)},  # every line fits, all of them do not (32k)
    ],
    ids=["huge request id", "huge other header", "headers over 32k"],
)
def test_nginx_400_for_huge_headers_is_valid_json(nginx_fronts, service, headers):
    _, fronts = nginx_fronts
    response = requests.get(f"{fronts[service].url}/echo", headers=headers, timeout=TIMEOUT)
    _assert_nginx_json(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize("service", FOLDERS)
def test_nginx_414_for_a_huge_request_line_is_valid_json(nginx_fronts, service):
    _, fronts = nginx_fronts
    response = requests.get(f"{fronts[service].url}/data/latest?n={'9' * 10_000}",
                            headers={"X-Request-ID": 'a"b'}, timeout=TIMEOUT)
    _assert_nginx_json(response, 414, "URI_TOO_LONG")


def _raw(nginx: Nginx, request: bytes) -> tuple[int, dict]:
    """Send bytes no HTTP client would and read the one answer (the request says Connection: close)."""
    with socket.create_connection((nginx.host, nginx.port), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("service", FOLDERS)
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n\r\n",  # no Host
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x00b\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "no host", "NUL in header", "space in name", "negative length", "bad chunk", "long uri"],
)
def test_nginx_refusals_of_malformed_requests_are_json(nginx_fronts, service, request_bytes):
    _, fronts = nginx_fronts
    status, body = _raw(fronts[service], request_bytes)
    assert 400 <= status < 500
    assert body["error_code"] in {"BAD_REQUEST", "URI_TOO_LONG"} and re.fullmatch(r"[0-9a-f]{32}", body["request_id"])


def test_nginx_503_is_valid_json_whatever_the_request_id(nginx_fronts):
    app, fronts = nginx_fronts
    app.stop()
    try:
        for service, nginx in fronts.items():
            for name, request_id in HOSTILE_IDS.items():
                response = requests.get(f"{nginx.url}/ready", headers={"X-Request-ID": request_id}, timeout=TIMEOUT)
                body = _assert_nginx_json(response, 503, "UPSTREAM_UNAVAILABLE")
                assert "not answering" in body["message"], (service, name)
    finally:
        app.start()


# --------------------------------------------------------------------------- the real services

ROW = dict(zip(FEATURES, generate_frame(1, seed=5)[list(FEATURES)].iloc[0].tolist(), strict=True))
COLUMNS = [*FEATURES, "quality"]
BIG_INT = "9" * 400


def _row_with(field: str, raw: str) -> str:
    return json.dumps(ROW).replace(json.dumps(ROW[field]), raw, 1)


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """Serving and ETL behind Nginx with their infrastructure; ETL schedule paused, no rows seeded."""
    stack = native_stack_factory(services=("serving", "etl"), extra_env={"SEED_ROWS": "0"})
    response = requests.post(f"{stack.urls['etl']}/jobs/etl/pause", headers=_admin(stack), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return stack


def _admin(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_token}"}


@pytest.fixture(scope="module")
def db(stack):
    client = MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=3000)
    yield client["DUMMY"]
    client.close()


def _stored(db) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in ("dummy_col_demo", "dummy_col_demo_pending", "predictions")}


def _assert_app_json(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["error_code"] == code and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


PREDICT_BODIES = {
    # The three anonymous 500s.
    "100k [": ("[" * 100_000, 400, "JSON_TOO_DEEP"),
    "400-digit feature": (_row_with("pH", BIG_INT), 422, "INVALID_ROWS"),
    "split columns with a list": (
        json.dumps({"dataframe_split": {"columns": [["pH"], *FEATURES[1:]], "data": [list(ROW.values())]}}), 400,
        "INVALID_BODY",
    ),
    # The classes around them.
    "100k {": ('{"a":' * 100_000, 400, "JSON_TOO_DEEP"),
    "400-digit batch": (json.dumps({"rows": [ROW] * 10}).replace(json.dumps(ROW["pH"]), BIG_INT), 422,
                        "INVALID_ROWS"),
    "5000 digits": (_row_with("pH", "9" * 5000), 400, "INVALID_JSON"),
    "null body": ("null", 400, "INVALID_BODY"),
    "boolean value": (_row_with("pH", "true"), 422, "INVALID_ROWS"),
    "object value": (_row_with("pH", '{"$gt": 0}'), 422, "INVALID_ROWS"),
    "split index wrong": (
        json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [list(ROW.values())], "index": 3}}), 400,
        "INVALID_BODY",
    ),
    "not UTF-8": (b'{"pH": "\xff"}', 400, "INVALID_JSON"),
}


@pytest.mark.parametrize(("body", "status", "code"), PREDICT_BODIES.values(), ids=PREDICT_BODIES.keys())
@pytest.mark.parametrize("service", ["serving", "etl"])
def test_hostile_json_is_a_4xx_through_nginx_and_stores_nothing(stack, db, service, body, status, code):
    before = _stored(db)
    url = f"{stack.urls['serving']}/predict" if service == "serving" else f"{stack.urls['etl']}/ingest"
    response = requests.post(url, data=body, headers={"Content-Type": "application/json", **_admin(stack)},
                             timeout=TIMEOUT)
    _assert_app_json(response, status, code)
    assert _stored(db) == before


def _csv(sep: str = ",") -> bytes:
    rows = generate_frame(3, seed=7).to_dict("records")
    lines = [sep.join(f'"{c}"' for c in COLUMNS), *(sep.join(str(r[c]) for c in COLUMNS) for r in rows)]
    return ("\n".join(lines) + "\n").encode()


def _first_cell(value: bytes) -> bytes:
    header, first, rest = _csv().split(b"\n", 2)
    return b"\n".join([header, value + first[first.index(b","):], rest])


CSV_BODIES = {
    "not UTF-8": (_csv() + b"\xff\n", 400, "INVALID_CSV"),
    "NUL byte": (_first_cell(b"7\x00"), 400, "INVALID_CSV"),
    "field over the csv limit": (_first_cell(b"7" * 200_000), 400, "INVALID_CSV"),
    "ragged row": (_csv() + b"7.0,0.3\n", 400, "INVALID_CSV"),
    "empty file": (b"", 400, "INVALID_CSV"),
    "only a header": (_csv().split(b"\n")[0] + b"\n", 400, "NO_ROWS"),
    "decimal commas in a ';' file": (_csv(";").replace(b".", b","), 422, "INVALID_ROWS"),
    "400-digit number": (_first_cell(BIG_INT.encode()), 422, "INVALID_ROWS"),
}


@pytest.mark.parametrize(("data", "status", "code"), CSV_BODIES.values(), ids=CSV_BODIES.keys())
@pytest.mark.parametrize("kind", ["body", "upload"])
def test_bad_csv_is_a_4xx_through_nginx_and_stores_nothing(stack, db, kind, data, status, code):
    before = _stored(db)
    url = f"{stack.urls['etl']}/ingest"
    if kind == "body":
        response = requests.post(url, data=data, headers={"Content-Type": "text/csv", **_admin(stack)},
                                 timeout=TIMEOUT)
    else:
        response = requests.post(url, files={"file": ("rows.csv", data)}, headers=_admin(stack), timeout=TIMEOUT)
    _assert_app_json(response, status, code)
    assert _stored(db) == before


def test_multipart_without_a_file_and_other_types_store_nothing(stack, db):
    before = _stored(db)
    url = f"{stack.urls['etl']}/ingest"
    _assert_app_json(requests.post(url, files={"rows": (None, _csv())}, headers=_admin(stack), timeout=TIMEOUT),
                     400, "NO_FILE")
    _assert_app_json(requests.post(url, data=_csv(), headers={"Content-Type": "text/plain", **_admin(stack)},
                                   timeout=TIMEOUT), 415, "UNSUPPORTED_MEDIA_TYPE")
    _assert_app_json(requests.post(f"{stack.urls['serving']}/predict", data=json.dumps(ROW),
                                   headers={"Content-Type": "text/plain"}, timeout=TIMEOUT),
                     415, "UNSUPPORTED_MEDIA_TYPE")
    assert _stored(db) == before


def test_a_good_csv_is_stored(stack, db):
    """The control: the counts above would have moved for a file that is accepted."""
    before = _stored(db)
    response = requests.post(f"{stack.urls['etl']}/ingest", data=_csv(";"),
                             headers={"Content-Type": "text/csv", **_admin(stack)}, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    assert _stored(db)["dummy_col_demo"] == before["dummy_col_demo"] + 3


@pytest.mark.parametrize("n", ["\u00b2", "\u0663", "\uff15", "0", "1001", "-1", "1.5", "9" * 5000])
def test_latest_n_takes_ascii_digits_only(stack, n):
    response = requests.get(f"{stack.urls['serving']}/data/latest", params={"n": n}, timeout=TIMEOUT)
    _assert_app_json(response, 400, "INVALID_PARAMETER")


@pytest.mark.parametrize("request_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
def test_app_and_nginx_agree_on_a_replaced_request_id(stack, request_id):
    response = requests.post(f"{stack.urls['serving']}/predict", data="[" * 100_000,
                             headers={"X-Request-ID": request_id, "Content-Type": "application/json"},
                             timeout=TIMEOUT)
    body = _assert_app_json(response, 400, "JSON_TOO_DEEP")
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])


def _get(path: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + path + b" HTTP/1.1", b"Host: x", b"Connection: close", *headers, b"", b""])


@pytest.mark.parametrize(
    "request_bytes",
    [
        _get(b"/data/latest?n=" + b"9" * 5000),  # over Gunicorn's default request line (4094), under Nginx's 8k
        _get(b"/data/latest?n=" + b"9" * 8150),  # just under Nginx's limit
        _get(b"/data/latest?n=" + b"9" * 8300),  # just over it
        _get(b"/data/latest?n=\xc2\xb2"),  # n=² sent raw, not percent-encoded
        _get(b"/data/latest?n=\xff"),
        _get(b"/\xff\xfe"),
        _get(b"/data/latest", *(b"X-H-%d: 1" % i for i in range(150))),  # over Gunicorn's default 100 headers
        _get(b"/data/latest", b"X-Forwarded-For: " + b"1" * 8150),  # Nginx appends to it
        _get(b"/data/latest", b"X-Request-ID: " + b"x" * 8100),
        _get(b"/data/latest", b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n[[["),
    ],
    ids=["5000-char query", "8150-char query", "8300-char query", "raw superscript", "raw byte in query",
         "raw bytes in path", "150 headers", "8k X-Forwarded-For", "8k request id", "GET with a body"],
)
@pytest.mark.parametrize("service", ["serving", "etl"])
def test_requests_nginx_lets_through_get_json_from_gunicorn_and_the_app(stack, service, request_bytes):
    """Never Gunicorn's plain-text 400 or a 500: a JSON 4xx from Nginx or the app, or the app's answer."""
    status, body = _raw(stack.nginx[service], request_bytes)
    assert status < 500, body
    if status >= 400:
        assert body["error_code"] and body["message"]


def test_ready_names_no_host_when_the_database_is_down(stack):
    stack.ferretdb.stop()
    try:
        for service in ("serving", "etl"):
            response = requests.get(f"{stack.urls[service]}/ready", timeout=TIMEOUT)
            assert response.status_code == 503
            assert response.json()["checks"]["mongodb"] == {"ok": False, "detail": "unreachable"}
            text = response.text
            assert str(stack.ferretdb.port) not in text and "127.0.0.1" not in text and "Timeout" not in text
    finally:
        stack.ferretdb.start()


def test_nginx_503_of_a_stopped_app_is_valid_json(stack):
    stack.stop_app("etl")
    try:
        for request_id in HOSTILE_IDS.values():
            response = requests.get(f"{stack.urls['etl']}/ready", headers={"X-Request-ID": request_id},
                                    timeout=TIMEOUT)
            _assert_nginx_json(response, 503, "UPSTREAM_UNAVAILABLE")
    finally:
        stack.start_app("etl")
