"""The quality monitor against a real FerretDB: drift against a training reference, live MAE, data size."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.drift import build_reference
from mlstack_core.predictions import PredictionsRepository
from mlstack_core.rows import RowsRepository, new_batch_id
from serving import quality
from serving.quality import QualityMonitor

pytestmark = pytest.mark.integration


@pytest.fixture
def db(fresh_db):
    return fresh_db


class Loader:
    """Stands in for RegistryClient.drift_reference and counts calls."""

    def __init__(self, reference):
        self.reference = reference
        self.calls: list[str] = []

    def __call__(self, run_id: str):
        self.calls.append(run_id)
        return self.reference


def store_for(version: str | None):
    model = SimpleNamespace(version=version, run_id=f"run-{version}") if version else None
    return SimpleNamespace(model=model)


def monitor(db, store, loader, **overrides) -> QualityMonitor:
    options = {"interval_seconds": 60, "drift_window_rows": 500, "drift_min_rows": 50, "mae_window_rows": 100}
    return QualityMonitor(store=store, reference_loader=loader,
                          predictions=lambda: PredictionsRepository(db["predictions"]),
                          rows=lambda: RowsRepository(db["rows"]), **(options | overrides))


def insert_predictions(db, frame, start: dt.datetime) -> None:
    db["predictions"].insert_many([
        {"inputs": {name: float(row[name]) for name in FEATURES}, "prediction": 5.5, "model_version": "3",
         "created_at": start + dt.timedelta(seconds=i)}
        for i, (_, row) in enumerate(frame.iterrows())
    ])


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture(scope="module")
def reference():
    frame = generate_frame(2000, seed=5)
    return build_reference(frame[list(FEATURES)].to_numpy(), FEATURES)


def test_recent_shifted_inputs_drift_and_older_ones_fall_out_of_the_window(db, reference):
    now = dt.datetime.now(dt.UTC)
    shifted = generate_frame(300, seed=6)
    shifted["alcohol"] += 3.0
    insert_predictions(db, shifted, now - dt.timedelta(hours=1))  # older: outside a 300-row window
    insert_predictions(db, generate_frame(300, seed=7), now)
    loader = Loader(reference)
    report = monitor(db, store_for("3"), loader, drift_window_rows=300).run_once()
    assert report.window_rows == 300 and report.reference_version == "3"
    assert max(v["psi"] for v in report.drift.values()) < 0.15
    assert report.prediction_mean == pytest.approx(5.5)

    insert_predictions(db, shifted, now + dt.timedelta(hours=1))  # newest: now the whole window
    report = monitor(db, store_for("3"), loader, drift_window_rows=300).run_once()
    assert max(report.drift, key=lambda name: report.drift[name]["psi"]) == "alcohol"
    assert report.drift["alcohol"]["psi"] > 0.25
    assert gauge("serving_feature_drift_psi", feature="alcohol") == pytest.approx(report.drift["alcohol"]["psi"])
    assert gauge("serving_drift_reference_version") == 3


def test_live_mae_uses_predictions_with_known_quality_and_data_size_counts_pending(db):
    now = dt.datetime.now(dt.UTC)
    labelled = [{"prediction": 6.0 + (0.5 if i % 2 else -1.0), TARGET: 6, "created_at": now + dt.timedelta(seconds=i)}
                for i in range(20)]
    # Direct predictions carry no ground truth: not in the MAE; older labelled ones fall out of the window.
    unlabelled = [{"prediction": 9.0, "created_at": now + dt.timedelta(seconds=30 + i)} for i in range(5)]
    old = [{"prediction": 0.0, TARGET: 9, "created_at": now - dt.timedelta(hours=1)} for _ in range(5)]
    db["predictions"].insert_many(labelled + unlabelled + old)
    repo = RowsRepository(db["rows"])
    frame = generate_frame(30, seed=4)
    repo.insert_batch(frame[list(FEATURES)].to_numpy(), frame[TARGET].tolist(), source="generator",
                      batch_id=new_batch_id(), pending=False)
    repo.insert_batch(frame[list(FEATURES)].to_numpy()[:5], [None] * 5, source="ingest", batch_id=new_batch_id(),
                      pending=True)
    report = monitor(db, store_for(None), Loader(None), mae_window_rows=20).run_once()
    assert report.live_mae_rows == 20
    assert report.live_mae == pytest.approx(np.mean([0.5, 1.0]))
    assert report.rows == {"all": 35, "pending": 5}
    assert report.drift == {} and report.reference_version is None
    assert gauge("serving_live_mae") == pytest.approx(0.75)
    assert gauge("data_rows_stored", status="pending") == 5
    assert gauge("serving_monitor_last_run_timestamp_seconds") > 0


def test_reference_is_fetched_once_per_version_and_retried_when_missing(db, reference, monkeypatch):
    insert_predictions(db, generate_frame(60, seed=8), dt.datetime.now(dt.UTC))
    store = store_for("3")
    loader = Loader(reference)
    watcher = monitor(db, store, loader)
    watcher.run_once()
    watcher.run_once()
    assert loader.calls == ["run-3"]
    store.model = SimpleNamespace(version="4", run_id="run-4")
    watcher.run_once()
    assert loader.calls == ["run-3", "run-4"]

    missing = Loader(None)
    watcher = monitor(db, store, missing)
    assert watcher.run_once().drift == {}
    watcher.run_once()
    assert missing.calls == ["run-4"]
    monkeypatch.setattr(quality, "REFERENCE_RETRY_SECONDS", 0.0)
    watcher.run_once()
    assert missing.calls == ["run-4", "run-4"]


def test_too_few_rows_publish_no_drift(db, reference):
    insert_predictions(db, generate_frame(20, seed=9), dt.datetime.now(dt.UTC))
    report = monitor(db, store_for("3"), Loader(reference), drift_min_rows=50).run_once()
    assert report.window_rows == 20 and report.drift == {}


def test_an_invalid_reference_is_ignored(db):
    insert_predictions(db, generate_frame(60, seed=10), dt.datetime.now(dt.UTC))
    report = monitor(db, store_for("3"), Loader({"format": 1, "features": {}})).run_once()
    assert report.reference_version is None and report.drift == {}
