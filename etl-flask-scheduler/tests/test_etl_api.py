"""ETL endpoints at unit level: validation, auth and errors happen before anything is stored."""

import io

import pytest

from mlstack_core.csv_rows import parse_csv
from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.errors import http_status
from mlstack_core.service_errors import ServiceError

ROWS = generate_frame(3, seed=11).to_dict("records")


def _csv(rows, sep=","):
    header = sep.join(f'"{c}"' for c in [*FEATURES, "quality"])
    lines = [sep.join(str(r[c]) for c in [*FEATURES, "quality"]) for r in rows]
    return "\n".join([header, *lines]) + "\n"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/modifyEtlJob/"),
        ("put", "/jobs/etl"),
        ("get", "/pauseEtlJob/"),
        ("get", "/resumeEtlJob/"),
        ("get", "/manualEtl/"),
        ("post", "/jobs/etl/run"),
        ("post", "/ingest"),
    ],
)
def test_state_changing_endpoints_need_the_token(client, method, path):
    response = getattr(client, method)(path, json={"minutes": 5})
    assert response.status_code == 401
    assert response.get_json()["error_code"] == "AUTH_REQUIRED"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_refused_ingest_reads_the_whole_body(client, token):
    """Answered before the body is looked at, the body is still read: left in the socket, Gunicorn's close would
    reset the connection and Nginx would answer 502/503 instead of the 401/403 (found by the fuzzer)."""
    body = io.BytesIO(b"[" + b'{"pH": 3.0},' * 100_000 + b"{}]")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/ingest", input_stream=body, content_type="application/json", headers=headers,
                           content_length=len(body.getvalue()))
    assert response.status_code == (403 if token else 401)
    assert body.tell() == len(body.getvalue())


def test_modify_job_rejects_a_callable_and_runs_nothing(client, admin, tmp_path):
    marker = tmp_path / "x"
    response = client.post(
        "/modifyEtlJob/", json={"func": "os:system", "args": [f"touch {marker}"]}, headers=admin
    )
    assert response.status_code == 422
    body = response.get_json()
    assert body["error_code"] == "INVALID_SCHEDULE"
    assert any(d["field"] == "func" for d in body["details"])
    assert not marker.exists()


def test_modify_job_with_database_down_is_503(client, admin):
    response = client.post("/modifyEtlJob/", json={"minutes": 5}, headers=admin)
    assert response.status_code == 503
    assert response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"


def test_ingest_invalid_rows_are_listed_and_nothing_is_touched(client, admin):
    bad = [ROWS[0], ROWS[1] | {"pH": 42}, {"pH": 3}]
    response = client.post("/ingest", json=bad, headers=admin)
    assert response.status_code == 422
    body = response.get_json()
    assert [r["row"] for r in body["details"]["invalid_rows"]] == [1, 2]
    assert "nothing was stored" in body["message"]


def test_ingest_unsupported_type(client, admin):
    response = client.post("/ingest", data="a=b", content_type="application/x-www-form-urlencoded", headers=admin)
    assert response.status_code == 415


def test_ingest_valid_rows_with_database_down_is_503(client, admin):
    response = client.post("/ingest", json=ROWS, headers=admin)
    assert response.status_code == 503


@pytest.mark.parametrize("sep", [",", ";"])
def test_csv_parsing_both_separators(sep):
    rows = parse_csv(_csv(ROWS, sep).encode(), max_rows=10)
    assert len(rows) == 3
    assert rows[0]["fixed acidity"] == pytest.approx(ROWS[0]["fixed acidity"])


@pytest.mark.parametrize(
    ("text", "code"),
    [(b"", "INVALID_CSV"), (b'"pH"\n', "NO_ROWS"), (b'"pH"\n1,2\n', "INVALID_CSV")],
)
def test_bad_csv(text, code):
    with pytest.raises(ServiceError) as info:
        parse_csv(text, max_rows=10)
    assert info.value.error_code == code


def test_csv_row_limit():
    with pytest.raises(ServiceError) as info:
        parse_csv(_csv(ROWS).encode(), max_rows=2)
    assert http_status(info.value) == 413


def test_csv_upload_with_a_bad_cell_is_422(client, admin):
    text = _csv(ROWS).replace(str(ROWS[1]["alcohol"]), "strong", 1)
    data = {"file": (__import__("io").BytesIO(text.encode()), "rows.csv")}
    response = client.post("/ingest", data=data, headers=admin, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "alcohol" in response.get_json()["details"]["invalid_rows"][0]["errors"]


def test_get_job_database_down(client):
    assert client.get("/getEtlJob/").status_code == 503


def test_unknown_job_name(client, admin):
    response = client.post("/jobs/other/pause", headers=admin)
    assert response.status_code == 404


@pytest.mark.parametrize("run_id", ["0123456789abcdef", "a" * 300, "0123456789ABCDEF0123456789abcdef", "run-1"])
def test_run_status_of_a_malformed_id_is_a_404_without_the_database(client, run_id):
    response = client.get(f"/jobs/runs/{run_id}")  # MongoDB is unreachable here: a lookup would be a 503
    assert response.status_code == 404
    assert response.get_json()["error_code"] == "RUN_NOT_FOUND"
    assert run_id not in response.get_data(as_text=True)


def test_manual_run_with_mongodb_down_is_a_clear_503(client, admin):
    response = client.post("/jobs/etl/run", headers=admin)
    assert response.status_code == 503
    assert response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("wait", ["21", "120", "nan", "-1", "later"])
def test_wait_is_bounded_below_every_timeout(client, admin, wait):
    response = client.post(f"/jobs/etl/run?wait={wait}", headers=admin)
    assert response.status_code == 400
    assert response.get_json()["error_code"] == "INVALID_PARAMETER"


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "é"])
def test_ingest_with_a_malformed_idempotency_key_is_400(client, admin, key):
    response = client.post("/ingest", json=ROWS, headers=admin | {"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json()["error_code"] == "INVALID_IDEMPOTENCY_KEY"
