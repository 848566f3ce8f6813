"""The closed loop on the native stack, through Nginx, on real servers.

fresh registry → bootstrap training → champion v1 (its files in the S3 bucket) → every serving worker on v1 →
rows arrive through the ETL → a training run that wins becomes v2 (v1 previous_champion) → every serving
worker moves to v2 while a client keeps predicting, with zero failed requests → runs that lose leave the
champion alone → retention deletes an old unaliased version and its S3 objects, never an aliased one →
rollback returns to v1. Then the failure cases: MLflow down during training, MongoDB down (no training can be queued).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from devstack.openapi_checks import check_live_contract
from devstack.polling import wait_until
from devstack.stack import worker_model_versions
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = pytest.mark.e2e

MODEL_NAME = "sk-learn-linear-reg-model"
TIMEOUT = 15
MODEL_POLL_SECONDS = 2
# Promotion is served by every worker within MODEL_POLL_SECONDS + load time (README); the test allows slack
# for a loaded CI machine and records the measured figure in its output.
SWITCH_BOUND_SECONDS = MODEL_POLL_SECONDS + 10


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    stack = native_stack_factory(
        extra_env={
            "SEED_ROWS": "300",
            "RETENTION_KEEP_VERSIONS": "1",
            "MODEL_POLL_SECONDS": str(MODEL_POLL_SECONDS),
            "TRAINING_INTERVAL_SECONDS": "3600",
            "ETL_INTERVAL_SECONDS": "3600",
        }
    )
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    for service, job in (("etl", "etl"), ("training", "training")):
        response = requests.post(f"{stack.urls[service]}/jobs/{job}/pause", headers=admin, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
    return stack


@pytest.fixture(scope="module")
def admin(stack):
    return {"Authorization": f"Bearer {stack.admin_token}"}


@pytest.fixture(scope="module")
def registry(stack):
    from mlflow import MlflowClient

    return MlflowClient(stack.mlflow_uri)


def alias_version(registry, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        aliases = registry.get_registered_model(MODEL_NAME).aliases
    except MlflowException:  # not registered yet
        return None
    return aliases.get(alias)


def worker_versions(stack) -> set[str | None]:
    """The version every serving worker reports on /metrics; a worker without its series yet counts as None."""
    text = requests.get(f"{stack.urls['serving']}/metrics", timeout=TIMEOUT).text
    by_pid = worker_model_versions(text)
    versions: set[str | None] = {str(v) if v else None for v in by_pid.values()}
    if len(by_pid) < stack.workers:
        versions.add(None)
    return versions


def train(stack, admin, wait: float = 90) -> dict:
    response = requests.post(f"{stack.urls['training']}/jobs/training/run", headers=admin, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    def finished():
        record = requests.get(f"{stack.urls['training']}/jobs/runs/{run_id}", timeout=TIMEOUT).json()
        return record if record["status"] in {"succeeded", "failed"} else None

    return wait_until(finished, wait, f"training run {run_id}", interval=0.5)


def s3_keys(stack, prefix: str = "") -> set[str]:
    client = stack.s3.client()
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack.mlflow.bucket, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def version_keys(stack, registry, version: str) -> set[str]:
    """The S3 objects of a registered version (resolved from the registry, not guessed)."""
    uri = registry.get_model_version_download_uri(MODEL_NAME, version)
    assert uri.startswith("mlflow-artifacts:/"), uri
    return s3_keys(stack, uri.removeprefix("mlflow-artifacts:/").lstrip("/"))


def shifted_rows(n: int, seed: int) -> list[dict]:
    """Labelled rows whose quality follows alcohol closely: a model trained on them clearly beats v1."""
    frame = generate_frame(n, seed=seed)
    frame["quality"] = np.clip(np.rint(frame["alcohol"] - 4.5), 3, 9).astype(int)
    return frame[[*FEATURES, "quality"]].to_dict("records")


class PredictingClient(threading.Thread):
    """Keeps predicting through Nginx and counts answers by model version and failures."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.row = generate_frame(1, seed=5)[list(FEATURES)].iloc[0].to_dict()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            try:
                response = session.post(f"{self.url}/predict", json=self.row, timeout=TIMEOUT)
                if response.status_code == 200:
                    self.versions[response.json()["model"]["version"]] += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))


def test_bootstrap_gives_a_champion_served_by_every_worker(stack, registry):
    version = wait_until(lambda: alias_version(registry, "champion"), 120, "a bootstrap champion")
    assert version == "1"
    assert version_keys(stack, registry, "1"), "the champion's model files are not in the S3 bucket"
    wait_until(lambda: worker_versions(stack) == {"1"}, 30, "every serving worker on v1")


def test_openapi_and_docs_answer_through_nginx_on_every_service(stack):
    # The contract of each service, through its Nginx: the document, Swagger UI and all its local assets.
    for service in ("serving", "etl", "training"):
        check_live_contract(stack.urls[service], timeout=TIMEOUT)


def test_winning_run_is_promoted_and_served_without_failed_requests(stack, admin, registry):
    rows = shifted_rows(3000, seed=21)
    response = requests.post(f"{stack.urls['etl']}/ingest", json=rows, headers=admin, timeout=120)
    assert response.status_code == 201, response.text
    client = PredictingClient(stack.urls["serving"])
    client.start()
    try:
        record = train(stack, admin)
        promoted_at = time.monotonic()
        assert record["status"] == "succeeded", record
        result = record["result"]
        assert result["outcome"] == "promoted", result["promotion"]
        assert result["data"]["source"] == "mongodb"
        assert alias_version(registry, "champion") == "2"
        assert alias_version(registry, "previous_champion") == "1"
        wait_until(lambda: worker_versions(stack) == {"2"}, SWITCH_BOUND_SECONDS, "every serving worker on v2")
        switch_seconds = time.monotonic() - promoted_at
        time.sleep(0.5)  # keep the client going a little after the switch
    finally:
        client.stop_event.set()
        client.join(timeout=30)
    print(f"all serving workers on v2 {switch_seconds:.2f}s after the promoting run finished")
    assert client.failures == []
    assert client.versions["1"] > 0 and client.versions["2"] > 0, client.versions
    decisions = requests.get(f"{stack.urls['training']}/promotions", timeout=TIMEOUT).json()["promotions"]
    assert any(d["outcome"] == "promoted" and str(d["challenger_version"]) == "2" for d in decisions)


def test_losing_runs_leave_the_champion_and_retention_spares_aliased_versions(stack, admin, registry):
    v1_keys = version_keys(stack, registry, "1")
    record = train(stack, admin)  # same data, same seeded split: a tie, which is not a win
    assert record["status"] == "succeeded", record
    assert record["result"]["outcome"] == "rejected"
    assert record["result"]["model_version"] == "3"
    assert alias_version(registry, "champion") == "2"
    assert alias_version(registry, "challenger") == "3"
    v3_keys = version_keys(stack, registry, "3")
    assert v3_keys

    record = train(stack, admin)  # v4 takes the challenger alias: v3 is now unaliased and not the newest (keep 1)
    assert record["result"]["outcome"] == "rejected"
    versions = {mv.version for mv in registry.search_model_versions(f"name='{MODEL_NAME}'")}
    assert "3" not in versions
    assert {"1", "2", "4"} <= versions  # v1 is old but holds previous_champion
    remaining = s3_keys(stack)
    assert not (v3_keys & remaining), "retention left the deleted version's objects in the bucket"
    assert v1_keys <= remaining
    assert worker_versions(stack) == {"2"}


def test_rollback_returns_to_v1(stack, admin, registry):
    response = requests.post(f"{stack.urls['training']}/model/rollback", headers=admin, timeout=60)
    assert response.status_code == 200, response.text
    assert alias_version(registry, "champion") == "1"
    assert alias_version(registry, "previous_champion") == "2"
    wait_until(lambda: worker_versions(stack) == {"1"}, SWITCH_BOUND_SECONDS, "every serving worker back on v1")


def test_mlflow_down_training_fails_cleanly_and_serving_keeps_serving(stack, admin, registry):
    row = generate_frame(1, seed=8)[list(FEATURES)].iloc[0].to_dict()
    stack.mlflow.stop()
    try:
        record = train(stack, admin, wait=120)
        assert record["status"] == "failed", record
        assert "MLflow" in record["error"] or "mlflow" in record["error"]
        response = requests.post(f"{stack.urls['serving']}/predict", json=row, timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["model"]["version"] == "1"
    finally:
        stack.mlflow.start()
    metrics = requests.get(f"{stack.urls['training']}/metrics", timeout=TIMEOUT).text
    assert 'job_runs_total{job_name="training",outcome="failure",service="training"}' in metrics
    assert alias_version(registry, "champion") == "1"


def test_mongodb_down_a_training_cannot_be_queued_and_training_resumes_after(stack, admin, registry):
    # Runs are queued and led through MongoDB (one queue for every replica): with it down nothing can be queued.
    # (A run already going when MongoDB fails trains on generated rows: test_training_integration covers it.)
    stack.ferretdb.stop()
    try:
        response = requests.post(f"{stack.urls['training']}/jobs/training/run", headers=admin, timeout=TIMEOUT)
        assert response.status_code == 503, response.text
        assert response.json()["error_code"] == "DATABASE_UNAVAILABLE"
    finally:
        stack.ferretdb.start()
    record = train(stack, admin, wait=120)
    assert record["status"] == "succeeded", record


def _chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    """Headless Debian Chromium with the flags that keep it off the network but loopback."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/install.sh (it installs Debian's chromium)")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--window-size=1400,900", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.xfail(strict=True, reason="with MLflow's basic auth on, headless Chromium loads the UI page with the "
                   "credentials in its address but the page's own API calls come back without the aliases; not solved")
def test_mlflow_ui_shows_the_runs_metrics_and_the_aliases(stack, registry, tmp_path):
    champion = registry.get_model_version_by_alias(MODEL_NAME, "champion")
    # The UI asks for a login (basic auth): the browser gets the admin's in the address and keeps it for the origin.
    login = stack.mlflow.client_env("admin")
    scheme, _, address = stack.mlflow_uri.partition("://")
    ui = f"{scheme}://{login['MLFLOW_TRACKING_USERNAME']}:{login['MLFLOW_TRACKING_PASSWORD']}@{address}"
    models_page = f"{ui}/#/models/{MODEL_NAME}"
    dom = _chromium("--dump-dom", models_page, tmp_path=tmp_path).stdout
    assert MODEL_NAME in dom
    assert "champion" in dom and "previous_champion" in dom
    run = registry.get_run(champion.run_id)
    run_page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{champion.run_id}"
    dom = _chromium("--dump-dom", run_page, tmp_path=tmp_path).stdout
    assert all(metric in dom for metric in ("mae", "rmse", "r2")), "the run page does not list the metrics"
    screenshot = tmp_path / "mlflow-models.png"
    _chromium(f"--screenshot={screenshot}", models_page, tmp_path=tmp_path)
    assert screenshot.stat().st_size > 10_000
