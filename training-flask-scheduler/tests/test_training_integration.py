"""Training against real servers: FerretDB, an S3 gateway and an MLflow server proxying its artifacts."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from mlstack_core import metrics as core_metrics
from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.jobs import RunContext
from mlstack_core.jobs.runner import JobRunner
from mlstack_core.rows import RowsRepository
from training.metrics import MODEL_METRIC

pytestmark = [
    pytest.mark.integration,
    # MLflow warns (in colour) about its own type hints while importing mlflow.pyfunc, needed by log/load_model.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred:UserWarning"),
]
logger = logging.getLogger(__name__)

ADMIN_TOKEN = "training-integration-token-0123456789"
SERVING_TOKEN = "serving-integration-token-0123456789"
DEADLINE_SECONDS = 120


# ----------------------------------------------------------------------------------------------- fixtures


class ServingStub:
    """Stands in for serving's reload endpoint and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.calls.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
                body = json.dumps({"reloaded": True, "model": {"version": "stub"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                logger.debug("serving stub: %s", args)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/loadModel/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serving_stub() -> Iterator[ServingStub]:
    """A fake serving reload endpoint on a free loopback port."""
    stub = ServingStub()
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def isolated(ferretdb, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database, model name and experiment per test; the database is dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    names = {"mongo_db": f"training_{suffix}", "model_name": f"wine-{suffix}",
             "mlflow_experiment_name": f"wine-quality-{suffix}"}
    yield names
    client = ferretdb.client()
    try:
        client.drop_database(names["mongo_db"])
    finally:
        client.close()


@pytest.fixture
def make_app(isolated, ferretdb, mlflow_server, serving_stub, tmp_path: Path):
    """Build a training app on the real servers; keyword arguments override settings."""

    def build(**overrides: Any):
        from training.app import create_app

        config = {
            "admin_token": ADMIN_TOKEN,
            "mongo_uri": ferretdb.uri,
            "state_dir": tmp_path / "state",
            "log_dir": tmp_path / "logs",
            "scheduler_enabled": False,
            "mlflow_tracking_uri": mlflow_server.uri,
            "load_model_api": serving_stub.url,
            "serving_admin_token": SERVING_TOKEN,
            "serving_nudge_retries": 0,
            **isolated,
            **overrides,
        }
        return create_app(config)

    return build


@pytest.fixture
def labelled_rows(ferretdb, isolated) -> int:
    """400 labelled rows in the app's collection, plus rows training must skip; returns the labelled count."""
    client = ferretdb.client()
    try:
        col = client[isolated["mongo_db"]]["dummy_col_demo"]
        repo = RowsRepository(col)
        frame = generate_frame(400, seed=11)
        repo.insert_batch(frame[list(FEATURES)].to_numpy(np.float64), frame[TARGET].tolist(), source="seed",
                          batch_id="seed", pending=False)
        unlabelled = generate_frame(30, seed=12)
        repo.insert_batch(unlabelled[list(FEATURES)].to_numpy(np.float64), [None] * 30, source="seed",
                          batch_id="unlabelled", pending=True)
        col.insert_one({**{name: 1.0 for name in FEATURES}, "alcohol": "strong", TARGET: 6})  # malformed
    finally:
        client.close()
    return 400


def run_job(app) -> dict[str, Any]:
    """One manual run through the job runner (run record in MongoDB, JOB_* metrics), synchronously."""
    jobs = app.extensions["job_service"]
    queued = jobs.request_run()
    claimed = jobs.runs().claim_queued(holder="test", epoch=1)
    assert claimed is not None and claimed["_id"] == queued["_id"]
    ctx = RunContext(run_id=claimed["_id"], job=claimed["job"], trigger="manual", request_id=claimed["_id"], epoch=1)
    return JobRunner(jobs).execute(claimed, ctx)


def aliases(app) -> dict[str, str]:
    """The model's aliases as the registry has them."""
    return app.extensions["training"].registry.aliases()


def s3_keys(s3_server, mlflow_server, artifact_uri: str) -> list[str]:
    """Objects in the bucket under a version's mlflow-artifacts: URI."""
    prefix = urlparse(artifact_uri).path.strip("/") + "/"
    response = s3_server.client().list_objects_v2(Bucket=mlflow_server.bucket, Prefix=prefix)
    return [obj["Key"] for obj in response.get("Contents", [])]


def job_failures() -> float:
    """The failure count of the training job in core's JOB_RUNS counter."""
    return core_metrics.JOB_RUNS.labels("training", "training", "failure")._value.get()


# ----------------------------------------------------------------------------------------------- tests


def test_train_reject_promote_and_rollback(make_app, labelled_rows, serving_stub, s3_server, mlflow_server) -> None:
    # 1. First model on a fresh registry: becomes champion; its files are in the bucket.
    weak = make_app(alpha=50.0)  # heavily regularised: little better than predicting the mean
    started = time.perf_counter()
    record = run_job(weak)
    logger.info("one training run took %.2f s", time.perf_counter() - started)
    assert record["status"] == "succeeded", record["error"]
    first = record["result"]
    assert first["outcome"] == "promoted" and first["lock"] == "acquired"
    assert first["data"]["source"] == "mongodb"
    assert first["data"]["rows"] == labelled_rows and first["data"]["skipped_rows"] == 1
    assert first["promotion"]["reason"].startswith("no champion yet")
    v1 = first["model_version"]
    assert aliases(weak) == {"champion": v1, "challenger": v1}
    registry = weak.extensions["training"].registry
    v1_uri = registry.artifact_uri(v1)
    assert v1_uri.startswith("mlflow-artifacts:/") and "/models/" in v1_uri
    v1_files = s3_keys(s3_server, mlflow_server, v1_uri)
    assert any(key.endswith("MLmodel") for key in v1_files) and any(key.endswith("model.skops") for key in v1_files)
    assert serving_stub.calls == [{"path": "/loadModel/", "authorization": f"Bearer {SERVING_TOKEN}"}]
    model = registry.load(v1)
    assert list(model.feature_names_in_) == list(FEATURES)

    # 2. A better model that must win by a huge margin: rejected, champion unchanged, no reload.
    strict = make_app(alpha=0.01, promotion_min_improvement=1e6)
    second = run_job(strict)["result"]
    assert second["outcome"] == "rejected"
    v2 = second["model_version"]
    assert second["promotion"]["champion_version"] == v1
    assert second["metrics"]["mae"] < second["promotion"]["champion_metrics"]["mae"]  # better, not enough
    assert aliases(strict) == {"champion": v1, "challenger": v2}
    assert len(serving_stub.calls) == 1
    tags = registry.version_for_alias("challenger").tags
    assert tags["promotion.outcome"] == "rejected" and "not more than required" in tags["promotion.reason"]

    # 3. The same better model with the default margin: promoted, the old champion kept as previous_champion.
    fair = make_app(alpha=0.01)
    third = run_job(fair)["result"]
    assert third["outcome"] == "promoted"
    v3 = third["model_version"]
    assert aliases(fair) == {"champion": v3, "previous_champion": v1, "challenger": v3}
    assert third["promotion"]["improvement"] > 0
    assert third["serving_nudge"]["ok"] is True and len(serving_stub.calls) == 2
    assert MODEL_METRIC.labels("champion", "mae")._value.get() == pytest.approx(third["metrics"]["mae"])

    client = fair.test_client()
    decisions = client.get("/promotions?n=10").get_json()["promotions"]
    assert [d["outcome"] for d in decisions] == ["promoted", "rejected", "promoted"]
    assert decisions[1]["challenger_version"] == v2 and decisions[1]["champion_metrics"]["mae"] > 0
    status = client.get("/model").get_json()
    assert status["aliases"]["champion"]["version"] == v3
    assert status["aliases"]["champion"]["promotion"]["outcome"] == "promoted"

    # 4. Rollback: v1 is champion again, v3 becomes previous_champion; recorded; serving nudged.
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = client.post("/model/rollback", headers=admin)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["outcome"], body["champion_version"], body["previous_champion_version"]) == ("rollback", v1, v3)
    assert aliases(fair) == {"champion": v1, "previous_champion": v3, "challenger": v3}
    assert len(serving_stub.calls) == 3
    assert client.get("/promotions?n=1").get_json()["promotions"][0]["outcome"] == "rollback"
    assert registry.version_for_alias("champion").tags["promotion.outcome"] == "rollback"


def test_retention_deletes_unaliased_versions_and_their_files(
    make_app, labelled_rows, s3_server, mlflow_server
) -> None:
    app = make_app(retention_keep_versions=1)
    registry = app.extensions["training"].registry
    v1 = run_job(app)["result"]["model_version"]  # champion
    second = run_job(app)["result"]  # same data and seed: a tie, rejected; holds challenger
    assert second["outcome"] == "rejected" and second["retention"]["deleted"] == []
    v2 = second["model_version"]
    v2_uri = registry.artifact_uri(v2)
    assert s3_keys(s3_server, mlflow_server, v2_uri)

    third = run_job(app)["result"]  # challenger moves on: v2 holds no alias and is beyond the newest 1
    v3 = third["model_version"]
    assert [d["version"] for d in third["retention"]["deleted"]] == [v2]
    assert third["retention"]["errors"] == []
    assert s3_keys(s3_server, mlflow_server, v2_uri) == []  # the files are gone from the bucket itself
    assert [v.version for v in registry.versions()] == [v3, v1]
    assert s3_keys(s3_server, mlflow_server, registry.artifact_uri(v1))  # the aliased champion's files stay
    assert registry.load(v1) is not None

    # Age-based: everything older than a moment goes, except versions holding an alias.
    aged = make_app(retention_keep_versions=100, retention_max_age_days=1e-9)
    v3_uri = registry.artifact_uri(v3)
    fourth = run_job(aged)["result"]
    assert [d["version"] for d in fourth["retention"]["deleted"]] == [v3]
    assert s3_keys(s3_server, mlflow_server, v3_uri) == []
    assert [v.version for v in registry.versions()] == [fourth["model_version"], v1]
    assert aliases(app)["champion"] == v1


def test_retention_that_cannot_delete_files_keeps_the_version_and_retries(
    make_app, labelled_rows, s3_server, mlflow_server
) -> None:
    app = make_app()
    registry = app.extensions["training"].registry
    v1 = run_job(app)["result"]["model_version"]  # champion
    v2 = run_job(app)["result"]["model_version"]  # a tie, rejected: holds only the challenger alias
    registry._client.delete_registered_model_alias(registry.model_name, "challenger")
    # Age-based retention: every version without an alias is doomed, i.e. v2.
    training = make_app(retention_max_age_days=1e-9).extensions["training"]
    v2_uri = registry.artifact_uri(v2)
    assert s3_keys(s3_server, mlflow_server, v2_uri)

    s3_server.stop()  # the tracking server is up, its artifact store is not
    try:
        outcome = training.apply_retention()
    finally:
        s3_server.start()
    assert outcome["deleted"] == [] and len(outcome["errors"]) == 1 and v2 in outcome["errors"][0]
    assert [v.version for v in registry.versions()] == [v2, v1]  # still listed, so it will be tried again
    assert s3_keys(s3_server, mlflow_server, v2_uri)  # and its files are still where the version says

    again = training.apply_retention()
    assert [d["version"] for d in again["deleted"]] == [v2] and again["errors"] == []
    assert s3_keys(s3_server, mlflow_server, v2_uri) == []
    assert [v.version for v in registry.versions()] == [v1]


def test_retention_finishes_a_version_whose_files_an_earlier_pass_already_deleted(
    make_app, labelled_rows, s3_server, mlflow_server
) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    app = make_app()
    registry = app.extensions["training"].registry
    v1 = run_job(app)["result"]["model_version"]
    v2 = run_job(app)["result"]["model_version"]
    registry._client.delete_registered_model_alias(registry.model_name, "challenger")
    v2_uri = registry.artifact_uri(v2)
    # An earlier pass deleted the files, then lost the registry before deleting the version.
    get_artifact_repository(v2_uri, tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri).delete_artifacts()
    assert s3_keys(s3_server, mlflow_server, v2_uri) == []

    outcome = make_app(retention_max_age_days=1e-9).extensions["training"].apply_retention()
    assert [d["version"] for d in outcome["deleted"]] == [v2] and outcome["errors"] == []
    assert [v.version for v in registry.versions()] == [v1]


def test_mlflow_down_during_training_fails_cleanly(make_app, labelled_rows, mlflow_server, monkeypatch) -> None:
    app = make_app()
    v1 = run_job(app)["result"]["model_version"]
    failures = job_failures()

    import training.services

    real_loader = training.services.load_training_data

    def loader_that_loses_the_registry(*args: Any, **kwargs: Any):
        # The registry answered the run's first call; it goes away while the data is read and the model fitted.
        mlflow_server.stop()
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(training.services, "load_training_data", loader_that_loses_the_registry)
    try:
        record = run_job(app)
    finally:
        mlflow_server.start()
    assert record["status"] == "failed"
    assert "MLflow" in record["error"] and "nothing was promoted" in record["error"]
    assert mlflow_server.uri.split("://")[1] not in record["error"]  # the public error names no host or port
    assert record["result"] is None
    assert job_failures() == failures + 1
    stored = app.extensions["job_service"].get_run(record["run_id"])
    assert stored["status"] == "failed" and stored["error"] == record["error"]
    assert aliases(app) == {"champion": v1, "challenger": v1}  # nothing half-promoted
    assert [v.version for v in app.extensions["training"].registry.versions()] == [v1]


def test_mlflow_unreachable_from_the_start_fails_fast(make_app) -> None:
    app = make_app(mlflow_tracking_uri="http://127.0.0.1:1")
    failures = job_failures()
    record = run_job(app)
    assert record["status"] == "failed" and "during 'connect'" in record["error"]
    assert job_failures() == failures + 1


def test_mongodb_down_trains_on_generated_rows(make_app) -> None:
    app = make_app(mongo_uri="mongodb://127.0.0.1:1/", mongo_timeout_ms=300, fallback_rows=600)
    # No run record can be stored without MongoDB (a run request answers 503): the job function itself runs.
    job = app.extensions["job_service"].job
    run_id = uuid.uuid4().hex
    summary = job.func(RunContext(run_id=run_id, job=job.name, trigger="schedule", request_id=run_id, epoch=1))
    assert summary["lock"] == "unavailable"
    assert summary["data"]["source"] == "generated" and summary["data"]["rows"] == 600
    assert "MongoDB unreachable" in summary["data"]["reason"]
    assert summary["outcome"] == "promoted"
    assert summary["promotion"]["recorded_in_mongodb"] is False
    # The decision is still on the version, even though MongoDB could not store it.
    tags = app.extensions["training"].registry.version_for_alias("champion").tags
    assert tags["promotion.outcome"] == "promoted"


def test_a_held_lease_skips_the_run(make_app, ferretdb, isolated) -> None:
    from mlstack_core.locks import MongoLease

    client = ferretdb.client()
    try:
        other = MongoLease(client[isolated["mongo_db"]], "training", ttl_seconds=60, holder="another-replica")
        assert other.acquire()
        record = run_job(make_app())
        other.release()
    finally:
        client.close()
    assert record["status"] == "succeeded"
    assert record["result"]["outcome"] == "skipped" and record["result"]["lock"] == "held"


def test_bootstrap_trains_at_start_then_manual_runs_are_asynchronous(make_app, labelled_rows) -> None:
    started = time.monotonic()
    app = make_app(scheduler_enabled=True)
    registry = app.extensions["training"].registry
    # What the scheduler process does (python -m mlstack_core.jobs), in a thread of this one.
    runner = JobRunner(app.extensions["job_service"])
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        champion = None
        while champion is None and time.monotonic() - started < DEADLINE_SECONDS:
            champion = registry.version_for_alias("champion")
            if champion is None:
                time.sleep(0.5)
        assert champion is not None, "no champion after bootstrap"
        logger.info("bootstrap to champion took %.2f s", time.monotonic() - started)

        client = app.test_client()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert client.get("/jobs/training").get_json()["schedule"]["seconds"] == 3600
        response = client.post("/jobs/training/run", headers=admin)
        assert response.status_code == 202
        status_url = response.get_json()["status_url"]
        deadline = time.monotonic() + DEADLINE_SECONDS
        body = response.get_json()
        while body["status"] in {"queued", "running"} and time.monotonic() < deadline:
            time.sleep(0.5)
            body = client.get(status_url).get_json()
        assert body["status"] == "succeeded", body
        assert body["result"]["outcome"] == "rejected"  # same rows, same seed: a tie keeps the champion

        response = client.post("/model/rollback", headers=admin)
        assert response.status_code == 409
        assert response.get_json()["error_code"] == "NO_PREVIOUS_CHAMPION"
    finally:
        runner.stop()
        thread.join(timeout=10)


def test_model_status_is_answered_from_the_last_read_while_mlflow_is_frozen(make_app, mlflow_server) -> None:
    from devstack.faults import paused

    app = make_app(registry_cache_seconds=0, registry_request_seconds=1)
    client = app.test_client()
    assert run_job(app)["result"]["outcome"] == "promoted"
    fresh = client.get("/model")
    assert fresh.status_code == 200 and fresh.get_json()["stale"] is False
    never_read = make_app(registry_cache_seconds=0, registry_request_seconds=1).test_client()

    answers: dict[str, Any] = {}

    def ask() -> None:
        answers["cached"] = client.get("/model")
        answers["never_read"] = never_read.get("/model")

    with paused(mlflow_server, 0):
        # MLflow's own client would retry a frozen server for half a minute; the budget ends the wait.
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(timeout=30)
        assert not asking.is_alive(), "GET /model waited on the frozen registry"
    stale = answers["cached"]
    assert stale.status_code == 200 and stale.get_json()["stale"] is True
    assert stale.get_json()["aliases"] == fresh.get_json()["aliases"]
    assert stale.get_json()["read_at"] == fresh.get_json()["read_at"]
    refused = answers["never_read"]
    assert refused.status_code == 503 and refused.get_json()["error_code"] == "REGISTRY_UNAVAILABLE"
    assert mlflow_server.uri.split("://")[1] not in refused.get_json()["message"]
    wait_until_fresh = time.monotonic() + 30
    while client.get("/model").get_json().get("stale") and time.monotonic() < wait_until_fresh:
        time.sleep(0.5)
    assert client.get("/model").get_json()["stale"] is False


def test_a_model_on_generated_rows_does_not_replace_a_champion_on_database_rows(make_app, labelled_rows) -> None:
    v1 = run_job(make_app())["result"]["model_version"]  # trained on the labelled database rows
    offline = {"mongo_uri": "mongodb://127.0.0.1:1/", "mongo_timeout_ms": 300, "fallback_rows": 600}

    def run_without_mongodb(app) -> dict[str, Any]:
        job = app.extensions["job_service"].job
        run_id = uuid.uuid4().hex
        return job.func(RunContext(run_id=run_id, job=job.name, trigger="schedule", request_id=run_id, epoch=1))

    refused = run_without_mongodb(make_app(**offline, alpha=0.0001))
    assert refused["data"]["source"] == "generated" and refused["outcome"] == "rejected"
    assert "trained on generated rows" in refused["promotion"]["reason"]
    assert aliases(make_app())["champion"] == v1

    allowed = run_without_mongodb(make_app(**offline, promotion_allow_generated_over_real=True))
    assert "generated rows" not in allowed["promotion"]["reason"]  # compared by the metric instead
    assert "improvement" in allowed["promotion"]["reason"]


def test_an_unscorable_champion_is_kept_unless_its_files_are_gone(
    make_app, labelled_rows, s3_server, mlflow_server, monkeypatch
) -> None:
    app = make_app(alpha=50.0)  # a weak champion: any later model beats it on the metric
    v1 = run_job(app)["result"]["model_version"]
    registry = app.extensions["training"].registry
    real_load = type(registry).load

    def load_with_the_store_down(self, version: str):
        s3_server.stop()  # after the challenger's files were uploaded, before the champion is read
        return real_load(self, version)

    monkeypatch.setattr(type(registry), "load", load_with_the_store_down)
    try:
        record = run_job(make_app(alpha=0.01))
    finally:
        s3_server.start()
    monkeypatch.setattr(type(registry), "load", real_load)
    assert record["status"] == "succeeded", record["error"]
    kept = record["result"]
    assert kept["outcome"] == "rejected" and "files are not known to be gone" in kept["promotion"]["reason"]
    assert aliases(app)["champion"] == v1

    # The champion's files deleted from the bucket: definitively gone, so the next better model replaces it.
    keys = s3_keys(s3_server, mlflow_server, registry.artifact_uri(v1))
    assert keys
    s3 = s3_server.client()
    for key in keys:
        s3.delete_object(Bucket=mlflow_server.bucket, Key=key)
    replaced = run_job(make_app(alpha=0.01))["result"]
    assert replaced["outcome"] == "promoted" and "cannot be used" in replaced["promotion"]["reason"]
    assert aliases(app)["champion"] == replaced["model_version"]
