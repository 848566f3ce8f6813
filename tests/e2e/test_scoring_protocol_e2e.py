"""Serving speaks MLflow's scoring protocol: MLflow's own client gets the same predictions from our
/invocations (through Nginx) as from ``mlflow models serve`` of the same registered champion.

The champion is what the training service trained and registered at start (skops, through the real MLflow and
S3 store); ``mlflow models serve`` runs in this test's own process group and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

import pandas as pd
import pytest
import requests

from devstack.polling import wait_until
from devstack.ports import free_port
from devstack.procs import ManagedProcess
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = pytest.mark.e2e

MODEL_NAME = "sk-learn-linear-reg-model"
TIMEOUT = 10


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    return native_stack_factory(services=("serving", "training"))


@pytest.fixture(scope="module")
def champion(stack) -> str:
    """The version serving serves once the training service's bootstrap run has promoted it."""
    serving = stack.urls["serving"]
    return wait_until(
        lambda: (requests.get(f"{serving}/model", timeout=TIMEOUT).json().get("model") or {}).get("version"),
        180, "serving to load the champion of the bootstrap training run",
    )


@pytest.fixture(scope="module")
def mlflow_models_serve(stack, champion, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """``mlflow models serve`` of the champion version on a free port; (host, port)."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    port = free_port()
    # It execs `uvicorn` by name: the interpreter's own bin directory comes first on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    # The reference server loads with MLflow's own sklearn loader, which the pickle switch blocks for skops too
    # (ours reads the files itself): allowed for this one process, as a user of `mlflow models serve` must.
    env = os.environ | {"MLFLOW_TRACKING_URI": stack.mlflow_uri, "PATH": path,
                        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    process = ManagedProcess(
        "mlflow-models-serve",
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL_NAME}/{champion}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        log_dir=tmp_path_factory.mktemp("models-serve"), env=env,
    )
    process.start()
    try:
        client = ScoringServerClient("127.0.0.1", port)
        process.wait_ready(lambda: client.ping() is None, timeout=180, interval=0.5)
        yield "127.0.0.1", port
    finally:
        process.stop()


def ours(stack) -> tuple[str, int]:
    url = urlparse(stack.urls["serving"])
    return url.hostname or "127.0.0.1", int(url.port or 80)


FRAME = generate_frame(25, seed=21)[list(FEATURES)]


@pytest.mark.parametrize(
    "data",
    [
        FRAME,  # the client sends a DataFrame as dataframe_split
        FRAME.to_dict("records"),  # a list: as inputs
        # A string goes as it is (the client's dict handling is for tensors, not named columns).
        json.dumps({"dataframe_records": FRAME.to_dict("records")}),
        json.dumps({"instances": FRAME.to_dict("records")}),
        json.dumps({"inputs": {name: FRAME[name].tolist() for name in FEATURES}}),
    ],
    ids=["dataframe", "list-of-records", "records", "instances", "inputs-columns"],
)
def test_mlflows_client_gets_the_same_predictions_from_both_servers(stack, mlflow_models_serve, data):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    theirs = ScoringServerClient(*mlflow_models_serve).invoke(data).get_predictions()
    mine = ScoringServerClient(*ours(stack)).invoke(data).get_predictions()
    assert pd.DataFrame(mine).to_numpy().ravel().tolist() == pytest.approx(
        pd.DataFrame(theirs).to_numpy().ravel().tolist(), rel=1e-9, abs=1e-9
    )


def test_csv_ping_and_version_answer_as_mlflow_models_serve(stack, mlflow_models_serve):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = mlflow_models_serve
    body = FRAME.to_csv(index=False)
    headers = {"Content-Type": "text/csv"}
    theirs = requests.post(f"http://{host}:{port}/invocations", data=body, headers=headers, timeout=TIMEOUT)
    mine = requests.post(f"{stack.urls['serving']}/invocations", data=body, headers=headers, timeout=TIMEOUT)
    assert theirs.status_code == mine.status_code == 200
    assert set(mine.json()) == set(theirs.json()) == {"predictions"}
    assert mine.json()["predictions"] == pytest.approx(theirs.json()["predictions"], rel=1e-9, abs=1e-9)

    client = ScoringServerClient(*ours(stack))
    client.ping()  # raises unless 200
    assert client.get_version() == ScoringServerClient(host, port).get_version()
