"""The data path end to end on real servers, through Nginx: ETL -> MongoDB -> serving -> predictions stored.

Real FerretDB (MongoDB wire protocol, auth on), a real MLflow tracking server with a real S3 server behind
it, Gunicorn-served apps with two workers each, Debian's Nginx in front. The model is one this test
registers (the training service is not part of this test). Outages: serving down (rows wait, then are
backfilled exactly once), serving unable to store or storing elsewhere (rows stay pending, then are backfilled
once), a row left with neither mark nor prediction (the sweep sends it), MongoDB down (runs fail fast, nothing
half-written). The last test checks the invariant over every row: a row without a pending mark has exactly one
prediction, no row lacks both.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pandas as pd
import pytest
import requests
from bson import ObjectId
from pymongo import MongoClient
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import Pipeline

from devstack.polling import run_job_to_end, wait_until
from devstack.ports import free_port
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = pytest.mark.e2e

MODEL_NAME = "sk-learn-linear-reg-model"
TIMEOUT = 10


def register_champion(tracking_uri: str, seed: int) -> str:
    """Fit a pipeline on generated rows, register it and give it the champion alias; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    frame = generate_frame(400, seed=seed)
    model = Pipeline([("model", ElasticNet(alpha=0.5, l1_ratio=0.01))])
    model.fit(pd.DataFrame(frame[list(FEATURES)]), frame["quality"])
    mlflow.set_experiment("e2e-data-path")
    example = frame[list(FEATURES)].head(3)
    signature = mlflow.models.infer_signature(example, model.predict(example))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL_NAME, signature=signature, input_example=example
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return version


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """Serving and ETL (2 workers each) behind Nginx, with their infrastructure; ETL schedule paused."""
    stack = native_stack_factory(services=("serving", "etl"), extra_env={"SEED_ROWS": "50"})
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    response = requests.post(f"{stack.urls['etl']}/jobs/etl/pause", headers=admin, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return stack


@pytest.fixture(scope="module")
def admin(stack):
    return {"Authorization": f"Bearer {stack.admin_token}"}


@pytest.fixture(scope="module")
def db(stack):
    client = MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=3000, tz_aware=True)
    yield client["DUMMY"]
    client.close()


@pytest.fixture(scope="module")
def service(stack):
    """Headers of the ETL's role on serving (row ids and quality)."""
    return {"Authorization": f"Bearer {stack.service_token}"}


def wait_for_champion(stack, version: str) -> None:
    serving = stack.urls["serving"]
    # Both workers must pick it up on their own (no reload call): poll enough times to see each worker.
    wait_until(
        lambda: all(
            (requests.get(f"{serving}/model", timeout=TIMEOUT).json().get("model") or {}).get("version") == version
            for _ in range(8)
        ),
        30,
        "every serving worker to serve the registered champion",
    )


@pytest.fixture(scope="module")
def champion(stack):
    version = register_champion(stack.mlflow_uri, seed=1)
    wait_for_champion(stack, version)
    return version


STRANDED: list[ObjectId] = []  # rows the fault tests leave pending: a later run backfills them


def restart_serving(stack, champion: str, env: dict[str, str] | None = None) -> None:
    """Restart serving's Gunicorn, with a fault in its environment or (env None) its usual one."""
    stack.stop_app("serving")
    stack.start_app("serving", env=env)
    wait_for_champion(stack, champion)


def run_etl(stack, admin, request_id: str) -> dict:
    response, record = run_job_to_end(stack.urls["etl"], "etl", headers=admin | {"X-Request-ID": request_id},
                                      timeout=30)
    assert response.headers["X-Request-ID"] == request_id
    return record


def test_seeded_rows_exist(stack, db):
    wait_until(lambda: db["dummy_col_demo"].count_documents({"source": "seed"}) == 50, 20, "seed rows")


def test_etl_run_stores_predicts_and_reads_back_through_nginx(stack, admin, db, champion):
    before = requests.get(f"{stack.urls['serving']}/getLengthData/", timeout=TIMEOUT).json()["count"]
    record = run_etl(stack, admin, "e2e-run-1")
    assert record["status"] == "succeeded", record
    result = record["result"]
    # The seeded rows are pending like any other: this first run backfills them.
    assert result["inserted"] == 1 and result["backfilled"] == 50 and result["predicted"] == 51

    row = db["dummy_col_demo"].find_one({"batch_id": record["run_id"]})
    assert set(FEATURES) <= set(row) and "datetime_" in row and row["source"] == "generator"
    assert db["dummy_col_demo_pending"].find_one({"_id": row["_id"]}) is None

    # Serving stored the prediction, under the row's id, before it answered: it is there when the run ends.
    stored = db["predictions"].find_one({"_id": row["_id"]})
    assert stored is not None and stored["model_version"] == champion
    assert stored["request_id"] == "e2e-run-1"  # Nginx -> ETL -> serving
    assert stored["quality"] == row["quality"]  # the ground truth travels along for live error monitoring

    latest = requests.get(f"{stack.urls['serving']}/data/latest?n=1", timeout=TIMEOUT).json()["rows"][0]
    assert latest["id"] == str(row["_id"]) and latest["model_version"] == champion
    assert latest["prediction_status"] == "done" and latest["prediction"] == pytest.approx(stored["prediction"])
    assert requests.get(f"{stack.urls['serving']}/getLengthData/", timeout=TIMEOUT).json()["count"] == before + 1


def test_the_original_templates_response_shapes(stack, champion):
    serving = stack.urls["serving"]
    count = requests.get(f"{serving}/data/count", timeout=TIMEOUT).json()["count"]
    length = requests.get(f"{serving}/getLengthData/", timeout=TIMEOUT).json()
    assert length["lengthData"] == count and isinstance(length["lengthData"], int)

    # The newest 5 rows keyed by position in the collection, as the original's DataFrame.to_dict("index").
    latest = requests.get(f"{serving}/getLatestData/", timeout=TIMEOUT).json()
    positions = sorted(int(key) for key in latest)
    assert positions == list(range(count - 5, count))
    newest = requests.get(f"{serving}/data/latest?n=1", timeout=TIMEOUT).json()["rows"][0]
    assert latest[str(count - 1)] == newest and set(FEATURES) <= set(newest)

    tested = requests.get(f"{serving}/predictTestMLFlow/", timeout=TIMEOUT).json()
    assert f"version {champion}" in tested["modelInfo"]
    assert isinstance(tested["result"], str)
    assert json.loads(tested["result"]) == pytest.approx(tested["predictions"]) and len(tested["predictions"]) == 20

    row = {name: float(value) for name, value in generate_frame(1, seed=3)[list(FEATURES)].iloc[0].items()}
    dummy = requests.post(f"{serving}/predictDummy/", json=row, timeout=TIMEOUT).json()
    assert f"version {champion}" in dummy["modelInfo"] and isinstance(dummy["result"], float)


def test_ingest_through_nginx_predicts_and_rejects_bad_rows(stack, admin, db, champion):
    rows = generate_frame(3, seed=77).to_dict("records")
    count = db["dummy_col_demo"].count_documents({})
    bad = requests.post(f"{stack.urls['etl']}/ingest", json=[*rows, rows[0] | {"pH": -1}], headers=admin,
                        timeout=TIMEOUT)
    assert bad.status_code == 422
    assert db["dummy_col_demo"].count_documents({}) == count
    good = requests.post(f"{stack.urls['etl']}/ingest", json=rows, headers=admin, timeout=TIMEOUT)
    assert good.status_code == 201, good.text
    body = good.json()
    assert body["inserted"] == 3 and body["predicted"] == 3
    assert db["dummy_col_demo"].count_documents({}) == count + 3


def test_serving_down_rows_wait_then_are_backfilled_exactly_once(stack, admin, db, champion):
    col = db["dummy_col_demo"]
    stack.stop_app("serving")
    try:
        record = run_etl(stack, admin, "e2e-outage-1")
        assert record["status"] == "succeeded"
        assert record["result"]["predicted"] == 0 and "forward_error" in record["result"]
        waiting = col.find_one({"batch_id": record["run_id"]})
        assert db["dummy_col_demo_pending"].find_one({"_id": waiting["_id"]}) is not None
    finally:
        stack.start_app("serving")
    wait_until(
        lambda: requests.get(f"{stack.urls['serving']}/ready", timeout=TIMEOUT).status_code == 200, 60,
        "serving to be ready again",
    )
    record2 = run_etl(stack, admin, "e2e-outage-2")
    assert record2["result"]["predicted"] == 2 and record2["result"]["backfilled"] == 1
    assert db["dummy_col_demo_pending"].count_documents({}) == 0
    # A third run has nothing left to backfill: each row was predicted once.
    record3 = run_etl(stack, admin, "e2e-outage-3")
    assert record3["result"]["backfilled"] == 0
    ids = [waiting["_id"], col.find_one({"batch_id": record2["run_id"]})["_id"]]
    wait_until(lambda: db["predictions"].count_documents({"_id": {"$in": ids}}) == 2, 10, "stored predictions")


def test_row_ids_need_the_service_token_and_anonymous_quality_is_ignored(stack, service, db, champion):
    serving = stack.urls["serving"]
    row = generate_frame(1, seed=5)[list(FEATURES)].iloc[0].to_dict()
    with_ids = {"rows": [row], "ids": [str(ObjectId())]}
    for headers, status in [({}, 401), ({"Authorization": "Bearer wrong-token-0123456789abc"}, 403),
                            ({"Authorization": f"Bearer {stack.admin_token}"}, 403)]:
        response = requests.post(f"{serving}/predict", json=with_ids, headers=headers, timeout=TIMEOUT)
        assert response.status_code == status, response.text
        assert response.json()["error_code"] in {"AUTH_REQUIRED", "AUTH_INVALID"}
    assert db["predictions"].find_one({"_id": ObjectId(with_ids["ids"][0])}) is None

    request_id = f"e2e-anon-{uuid.uuid4().hex[:8]}"
    response = requests.post(f"{serving}/predict", json={"rows": [row | {"quality": 9}]},
                             headers={"X-Request-ID": request_id}, timeout=TIMEOUT)
    assert response.status_code == 200 and "stored" not in response.json()
    # Anonymous: packed into a bucket with what else the writer's flush held; the bucket names the request.
    stored = wait_until(lambda: db["predictions"].find_one({"request_ids": request_id}), 10, "the buffered write")
    assert stored["rows"] >= 1 and "predictions" in stored
    assert "quality" not in stored and "row_id" not in stored  # fake labels never reach the live MAE

    response = requests.post(f"{serving}/predict", json=with_ids, headers=service, timeout=TIMEOUT)
    assert response.status_code == 200 and response.json()["stored"] == 1  # stored before the answer
    assert db["predictions"].count_documents({"_id": ObjectId(with_ids["ids"][0])}) == 1
    db["predictions"].delete_one({"_id": ObjectId(with_ids["ids"][0])})  # not a row: keep the invariant check exact


def test_serving_that_cannot_store_answers_503_and_the_rows_stay_pending(stack, admin, service, db, champion):
    broken = {"MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/", "MONGO_TIMEOUT_MS": "300"}  # nothing listens
    restart_serving(stack, champion, broken)
    try:
        body = {"rows": [generate_frame(1, seed=6)[list(FEATURES)].iloc[0].to_dict()], "ids": [str(ObjectId())]}
        response = requests.post(f"{stack.urls['serving']}/predict", json=body, headers=service, timeout=TIMEOUT)
        assert response.status_code == 503 and response.json()["error_code"] == "PREDICTIONS_NOT_STORED"
        record = run_etl(stack, admin, "e2e-cannot-store")
        assert record["status"] == "succeeded", record
        assert record["result"]["predicted"] == 0
        assert "serving answered 503" in record["result"]["forward_error"]
        row = db["dummy_col_demo"].find_one({"batch_id": record["run_id"]})
        assert db["dummy_col_demo_pending"].find_one({"_id": row["_id"]}) is not None
        assert db["predictions"].find_one({"_id": row["_id"]}) is None
    finally:
        restart_serving(stack, champion)
    STRANDED.append(row["_id"])


def test_serving_answering_without_storing_cannot_clear_a_mark(stack, admin, db, champion):
    # Serving writes to another collection than the one the ETL checks: it answers 200 ("stored") for rows
    # whose prediction the ETL cannot find, as a serving bug would. The ETL believes the database, not serving.
    restart_serving(stack, champion, {"PREDICTIONS_COLLECTION": "predictions_elsewhere"})
    try:
        record = run_etl(stack, admin, "e2e-stored-elsewhere")
        assert record["status"] == "succeeded", record
        result = record["result"]
        assert result["predicted"] == 0 and result["unstored"] == result["sent"] >= 2, result
        row = db["dummy_col_demo"].find_one({"batch_id": record["run_id"]})
        assert db["dummy_col_demo_pending"].find_one({"_id": row["_id"]}) is not None
    finally:
        restart_serving(stack, champion)
    db["predictions_elsewhere"].drop()
    STRANDED.append(row["_id"])


def test_stranded_rows_are_backfilled_exactly_once(stack, admin, db, champion):
    assert len(STRANDED) == 2
    record = run_etl(stack, admin, "e2e-recovered")
    assert record["status"] == "succeeded" and record["result"]["backfilled"] >= 2, record
    assert db["dummy_col_demo_pending"].count_documents({}) == 0
    assert db["predictions"].count_documents({"_id": {"$in": STRANDED}}) == 2


def test_a_row_with_neither_mark_nor_prediction_is_swept_and_predicted_once(stack, admin, db, champion):
    # What older code or a lost mark leaves behind: a row without a mark or a prediction, older than the sweep's
    # grace period (younger rows may still be mid-insert; its _id carries its creation time).
    created = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    orphan = ObjectId(ObjectId.from_datetime(created).binary[:4] + os.urandom(8))
    row = generate_frame(1, seed=8)[list(FEATURES)].iloc[0].to_dict()
    db["dummy_col_demo"].insert_one({"_id": orphan, **row, "quality": 6, "datetime_": created,
                                     "batch_id": "legacy", "source": "ingest"})
    record = run_etl(stack, admin, "e2e-sweep")
    assert record["status"] == "succeeded" and record["result"]["swept"] == 1, record
    assert db["predictions"].count_documents({"_id": orphan}) == 1
    assert db["dummy_col_demo_pending"].find_one({"_id": orphan}) is None
    assert run_etl(stack, admin, "e2e-sweep-again")["result"]["swept"] == 0
    assert db["predictions"].count_documents({"_id": orphan}) == 1


def test_mongodb_down_run_request_is_a_503_and_nothing_is_written(stack, admin, db, champion):
    col = db["dummy_col_demo"]
    count = col.count_documents({})
    stack.ferretdb.stop()
    try:
        # Runs are requested through MongoDB: with it down the request itself is a clear 503, at once.
        response = requests.post(f"{stack.urls['etl']}/jobs/etl/run", headers=admin, timeout=TIMEOUT)
        assert response.status_code == 503 and response.json()["error_code"] == "DATABASE_UNAVAILABLE"
        # Reads answer a JSON 503 rather than hanging.
        response = requests.get(f"{stack.urls['serving']}/getLengthData/", timeout=TIMEOUT)
        assert response.status_code == 503 and response.json()["error_code"] == "DATABASE_UNAVAILABLE"
    finally:
        stack.ferretdb.start()
    assert col.count_documents({}) == count
    record = run_etl(stack, admin, "e2e-mongo-back")
    assert record["status"] == "succeeded" and record["result"]["predicted"] == 1


def test_every_row_without_a_mark_has_exactly_one_prediction_and_none_lacks_both(db):
    rows = {doc["_id"] for doc in db["dummy_col_demo"].find({}, {"_id": 1})}
    marked = {doc["_id"] for doc in db["dummy_col_demo_pending"].find({}, {"_id": 1})}
    predicted = [doc["_id"] for doc in db["predictions"].find({"_id": {"$in": list(rows)}}, {"_id": 1})]
    assert len(predicted) == len(set(predicted))  # the row's id is the prediction's _id: at most one each
    assert not rows - marked - set(predicted), "rows with neither a pending mark nor a prediction"
    assert len(rows) > 50 and not marked, "the last runs succeeded: nothing is left pending"
