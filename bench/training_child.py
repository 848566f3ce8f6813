"""One measured step in a fresh process, so its peak RSS (VmHWM) is its own: ``python -m bench.training_child``.

Arguments: variant (ours-load, original-load, floor-load, ours-cycle, original-cycle), MongoDB URI, database,
collection, MLflow URI (cycles only). Prints one JSON line: seconds, rows, baseline and peak RSS in MiB.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymongo import MongoClient

from mlstack_core.data.generator import FEATURES, TARGET
from mlstack_core.rows import RowsRepository


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def original_frame(collection) -> pd.DataFrame:
    """The original template's read: every document, as a list of dicts, into a DataFrame."""
    return pd.DataFrame(list(collection.find()))


def ours_load(collection) -> int:
    """Our training read: RowsRepository.labelled_arrays into the training frame (as training.data does)."""
    features, quality, _skipped = RowsRepository(collection).labelled_arrays()
    frame = pd.DataFrame(features, columns=list(FEATURES))
    frame[TARGET] = quality
    return len(frame)


def original_load(collection) -> int:
    """The original's read and the columns it trained on."""
    frame = original_frame(collection)
    frame = frame[[*FEATURES, TARGET]].dropna()
    return len(frame)


def floor_load(collection) -> int:
    """No client work at all: the raw BSON batches of every document, counted, never decoded (FerretDB's share)."""
    rows = 0
    with collection.find_raw_batches({}, batch_size=10_000) as cursor:
        for raw in cursor:
            rows += _count_documents(raw)
    return rows


def _count_documents(raw: bytes) -> int:
    # A batch is BSON documents back to back, each starting with its int32 length: walk them without decoding.
    count, offset = 0, 0
    while offset < len(raw):
        offset += int.from_bytes(raw[offset:offset + 4], "little")
        count += 1
    return count


def original_cycle(collection, mlflow_uri: str) -> int:
    """The original template's training job: read, split, fit ElasticNet, log and register the model."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import ElasticNet
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split

    frame = original_frame(collection)
    x = frame[list(FEATURES)]
    y = frame[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42)
    model = ElasticNet(alpha=0.5, l1_ratio=0.01, random_state=42).fit(x_train, y_train)
    predicted = model.predict(x_test)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("bench-original")
    with mlflow.start_run():
        mlflow.log_params({"alpha": 0.5, "l1_ratio": 0.01})
        mlflow.log_metrics({"rmse": float(np.sqrt(mean_squared_error(y_test, predicted))),
                            "mae": float(mean_absolute_error(y_test, predicted)),
                            "r2": float(r2_score(y_test, predicted))})
        mlflow.sklearn.log_model(model, name="model", registered_model_name="bench-original-model")
    return len(frame)


def ours_cycle(mongo_uri: str, database: str, collection: str, mlflow_uri: str) -> int:
    """Our training run (TrainingService.run): read, fit, score, register, champion comparison, promotion."""
    from mlstack_core.mongo import MongoProvider
    from training.nudge import ServingNudger
    from training.registry import ModelRegistry
    from training.services import TrainingService
    from training.settings import TrainingSettings

    settings = TrainingSettings(
        admin_token=secrets.token_urlsafe(24), mongo_uri=mongo_uri, mongo_db=database,
        mongo_collection=collection, mlflow_tracking_uri=mlflow_uri, mlflow_experiment_name="bench-ours",
        model_name="bench-ours-model", scheduler_enabled=False, bootstrap_enabled=False,
        read_timeout_seconds=3600, state_dir=Path("/tmp/mlstack-bench-training-state"),
        log_dir=Path("/tmp/mlstack-bench-training-logs"),
    )
    mongo = MongoProvider(mongo_uri, database, timeout_ms=5000)
    registry = ModelRegistry(mlflow_uri, model_name=settings.model_name, experiment_name="bench-ours")
    # Nobody listens there: the nudge fails at once, as when serving is down; the run does not depend on it.
    nudger = ServingNudger("http://127.0.0.1:9/loadModel/", token="x" * 32, timeout=1, retries=0)
    summary = TrainingService(settings, registry=registry, mongo=mongo, nudger=nudger).run("bench")
    if summary.get("data", {}).get("source") != "mongodb":
        raise RuntimeError(f"training did not read MongoDB: {summary.get('data')}")
    return int(summary["data"]["rows"])


def main(argv: list[str]) -> None:
    """Run one variant and print its figures."""
    variant, uri, database, collection_name = argv[:4]
    mlflow_uri = argv[4] if len(argv) > 4 else ""
    if variant.endswith("-cycle"):
        import mlflow  # noqa: F401 - imported before the baseline reading, like pandas and pymongo
        import sklearn.linear_model  # noqa: F401
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=3_600_000, tz_aware=True)
    collection = client[database][collection_name]
    client.admin.command("ping")  # connect before the baseline reading (a count would scan on FerretDB)
    baseline = _status_mib("VmRSS")
    started = time.perf_counter()
    if variant == "ours-load":
        rows = ours_load(collection)
    elif variant == "original-load":
        rows = original_load(collection)
    elif variant == "floor-load":
        rows = floor_load(collection)
    elif variant == "original-cycle":
        rows = original_cycle(collection, mlflow_uri)
    elif variant == "ours-cycle":
        rows = ours_cycle(uri, database, collection_name, mlflow_uri)
    else:
        raise SystemExit(f"unknown variant {variant}")
    seconds = time.perf_counter() - started
    # VmHWM, the RSS high-water mark of this process image: ru_maxrss would also carry the forking parent's peak,
    # which Linux keeps across exec.
    peak = _status_mib("VmHWM")
    print(json.dumps({"variant": variant, "rows": rows, "seconds": round(seconds, 3),
                      "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(peak, 1),
                      "peak_above_baseline_mib": round(peak - baseline, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
