"""The registry as the trust boundary, on the real native stack (MLflow with basic auth, serving, training).

Whoever can move ``champion`` decides what serving runs. Proven here: without credentials the alias cannot be
moved (401), the serving user may read but not move it (403), and a pickle-flavoured version that an authorised
writer registers and makes champion is refused by serving (it keeps serving the previous version and says so)
and by training's champion scoring; its pickle payload, which would create a file when unpickled, never runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from devstack.polling import run_job_to_end, wait_until
from devstack.stack import MODEL_NAME, worker_model_versions
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = pytest.mark.e2e

TIMEOUT = 10
ALIAS_API = "/api/2.0/mlflow/registered-models/alias"


class PicklePayload:
    """Looks like an estimator; unpickling it runs ``Path.touch(marker)``: proof that someone deserialized it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def predict(self, rows):
        return [0.0] * len(rows)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """Serving and training behind Nginx; training's bootstrap run registers the first champion (skops)."""
    return native_stack_factory(services=("serving", "training"), extra_env={"SEED_ROWS": "200"})


def served_versions(stack) -> set[int]:
    """The version every live serving worker serves (from the merged /metrics)."""
    text = requests.get(f"{stack.apps['serving'].url}/metrics", timeout=TIMEOUT).text
    return set(worker_model_versions(text).values())


@pytest.fixture(scope="module")
def champion(stack) -> str:
    """The version training's bootstrap made champion, once every serving worker serves it."""
    def found() -> str | None:
        body = requests.get(f"{stack.urls['training']}/model", timeout=TIMEOUT).json()
        return ((body.get("aliases") or {}).get("champion") or {}).get("version")

    # Each training worker answers from its own read for up to REGISTRY_CACHE_SECONDS: keep the first answer.
    version = wait_until(found, 180, "training's bootstrap run to register a champion")
    wait_until(lambda: served_versions(stack) == {int(version)}, 60, "every serving worker to serve the champion")
    return version


def credentials(stack, role: str) -> tuple[str, str]:
    env = stack.mlflow.client_env(role)
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def move_champion(stack, version: str, auth: tuple[str, str] | None) -> requests.Response:
    return requests.post(f"{stack.mlflow_uri}{ALIAS_API}", json={"name": MODEL_NAME, "alias": "champion",
                         "version": version}, auth=auth, timeout=TIMEOUT)


def champion_version(stack) -> str:
    response = requests.get(f"{stack.mlflow_uri}{ALIAS_API}", params={"name": MODEL_NAME, "alias": "champion"},
                            auth=credentials(stack, "admin"), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]["version"]


def test_only_the_training_user_may_move_champion(stack, champion):
    anonymous = move_champion(stack, champion, None)
    assert anonymous.status_code == 401, anonymous.text
    wrong = move_champion(stack, champion, ("training", "not-the-password-0123456789"))
    assert wrong.status_code == 401, wrong.text
    serving = move_champion(stack, champion, credentials(stack, "serving"))
    assert serving.status_code == 403, serving.text
    # The serving user reads what it needs; the training user writes.
    read = requests.get(f"{stack.mlflow_uri}{ALIAS_API}", params={"name": MODEL_NAME, "alias": "champion"},
                        auth=credentials(stack, "serving"), timeout=TIMEOUT)
    assert read.status_code == 200 and read.json()["model_version"]["version"] == champion
    assert move_champion(stack, champion, credentials(stack, "training")).status_code == 200
    assert champion_version(stack) == champion


def test_a_pickle_champion_is_refused_by_serving_and_by_training(stack, champion, tmp_path, monkeypatch):
    import mlflow
    import mlflow.sklearn

    # An authorised writer (the training user itself) registers a pickle-flavoured version and makes it champion.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "training")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials(stack, "training")[1])
    mlflow.set_tracking_uri(stack.mlflow_uri)
    marker = tmp_path / "unpickled"
    experiment = mlflow.set_experiment("e2e-registry-trust")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = mlflow.sklearn.log_model(PicklePayload(marker), name="model", registered_model_name=MODEL_NAME,
                                        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
                                        pip_requirements=[])
    hostile = str(info.registered_model_version)
    assert move_champion(stack, hostile, credentials(stack, "training")).status_code == 200

    # Serving: every worker sees the new champion, refuses it, and keeps answering with the previous version.
    serving = stack.urls["serving"]

    def refused_everywhere() -> bool:
        bodies = [requests.get(f"{serving}/model", timeout=TIMEOUT).json() for _ in range(8)]
        return all((body.get("refused") or {}).get("version") == hostile for body in bodies)

    wait_until(refused_everywhere, 30, "every serving worker to refuse the pickle champion")
    body = requests.get(f"{serving}/model", timeout=TIMEOUT).json()
    assert body["model"]["version"] == champion
    assert "only skops" in body["refused"]["reason"] and "refused" in body["last_error"]
    assert served_versions(stack) == {int(champion)}
    row = generate_frame(1, seed=3)[list(FEATURES)].iloc[0].to_dict()
    answer = requests.post(f"{serving}/predict", json=row, timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == champion
    metrics_text = requests.get(f"{stack.apps['serving'].url}/metrics", timeout=TIMEOUT).text
    assert 'serving_model_loads_total{outcome="refused"}' in metrics_text

    # Training: its run scores the champion on the holdout; the pickle champion is refused, never loaded.
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    _, record = run_job_to_end(stack.urls["training"], "training", headers=admin, timeout=120)
    assert record["status"] == "succeeded", record
    promotion = record["result"]["promotion"]
    assert promotion["champion_version"] == hostile and promotion["champion_metrics"] is None
    # Refused is definitive (serving refuses it too): the challenger replaces it, whatever the metric says.
    assert record["result"]["outcome"] == "promoted" and "model loader refuses it" in promotion["reason"]
    log = stack.apps["training"].log_path.read_text(errors="replace")
    assert f"model {MODEL_NAME} version {hostile} refused: stored with 'pickle' serialization" in log
    assert not marker.exists(), "a service unpickled the registered payload"
