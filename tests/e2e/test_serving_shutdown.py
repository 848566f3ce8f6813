"""Graceful shutdown loses no stored prediction: SIGTERM to serving's Gunicorn under load, then count.

Serving (2 workers, its own Gunicorn config) with a champion registered in a real MLflow and a real FerretDB.
Two client threads post one-row predictions straight to Gunicorn for a few seconds; the master gets SIGTERM
while they keep sending; once it has exited, MongoDB must hold exactly one prediction per 200 answer: the
background writer's batches and the final flush of Gunicorn's worker_exit hook together store everything.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pandas as pd
import pytest
import requests
from pymongo import MongoClient

from devstack.polling import wait_until
from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.predictions import PredictionsRepository

pytestmark = pytest.mark.e2e

MODEL_NAME = "sk-learn-linear-reg-model"
DATABASE = "SHUTDOWN"
CLIENTS = 2
LOAD_SECONDS = 3.0
MAX_REQUESTS_PER_CLIENT = 20_000  # a bound besides time
ROW = dict(zip(FEATURES, generate_frame(1, seed=5)[list(FEATURES)].iloc[0].tolist(), strict=True))


def _register_champion(tracking_uri: str) -> str:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import ElasticNet
    from sklearn.pipeline import Pipeline

    mlflow.set_tracking_uri(tracking_uri)
    frame = generate_frame(300, seed=2)
    model = Pipeline([("model", ElasticNet(alpha=0.5, l1_ratio=0.01))])
    model.fit(pd.DataFrame(frame[list(FEATURES)]), frame[TARGET])
    mlflow.set_experiment("e2e-shutdown")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL_NAME)
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return version


def _post_until_stopped(url: str, stop: threading.Event, outcomes: collections.Counter, lock: threading.Lock):
    with requests.Session() as session:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            try:
                outcome = session.post(url, json=ROW, timeout=10).status_code
            except requests.RequestException:
                outcome = "connection error"
                time.sleep(0.01)  # Gunicorn is gone: do not spin
            with lock:
                outcomes[outcome] += 1


def test_sigterm_under_load_stores_every_answered_prediction(native_stack_factory):
    stack = native_stack_factory(
        services=("serving",), extra_env={"MONGO_DB": DATABASE, "SEED_ROWS": "0", "MONITOR_ENABLED": "false"}
    )
    gunicorn = stack.apps["serving"]
    version = _register_champion(stack.mlflow_uri)
    wait_until(
        lambda: all((requests.get(f"{gunicorn.url}/model", timeout=5).json().get("model") or {}).get("version")
                    == version for _ in range(10)),
        60, "both serving workers to serve the champion",
    )

    outcomes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    clients = [threading.Thread(target=_post_until_stopped, args=(f"{gunicorn.url}/predict", stop, outcomes, lock))
               for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: outcomes[200] >= 20, 20, "the first answers")
        time.sleep(LOAD_SECONDS)
        os.kill(gunicorn.pid, signal.SIGTERM)  # the master only, as an orchestrator stops it
        time.sleep(1.0)  # clients keep sending while the workers finish and flush
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    # The workers flush in Gunicorn's worker_exit hook, then the master exits.
    wait_until(lambda: not gunicorn.running, 60, "Gunicorn to exit after SIGTERM")

    with MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=5000) as mongo:
        stored = PredictionsRepository(mongo[DATABASE]["predictions"]).stored_rows()  # packed: rows, not documents
    assert outcomes[200] > 100, outcomes  # the load really ran
    assert stored == outcomes[200], f"{stored} stored for {outcomes[200]} answers 200 ({dict(outcomes)})"
