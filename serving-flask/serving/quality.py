"""Model quality monitor: input drift against the champion's training reference, live MAE, data size.

Runs in exactly one serving worker (the one holding ``STATE_DIR/serving-monitor.lock``, as the schedulers
do) every ``MONITOR_INTERVAL_SECONDS``, from data every worker shares (read through
:class:`mlstack_core.predictions.PredictionsRepository` and :class:`mlstack_core.rows.RowsRepository`):

- drift and mean prediction: the last ``DRIFT_WINDOW_ROWS`` stored predictions (``predictions`` collection:
  whatever serving predicted, ETL batches and direct calls); drift per feature (PSI and KS) against the drift
  reference that training logged with the served version (an MLflow artifact of its run, see
  :mod:`mlstack_core.drift`);
- live MAE: the last ``LIVE_MAE_WINDOW_ROWS`` stored predictions that carry the row's true ``quality`` (the
  ETL forwards it with its rows, with its service token; serving stores it beside the prediction and ignores
  a quality sent by anyone else);
- data size: rows in the rows collection, and how many still wait for a prediction.

The figures go to gauges (serving.metrics); a failed pass is logged and counted, and the gauges keep their
last values (the ``serving_monitor_last_run_timestamp_seconds`` gauge says how fresh they are).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlstack_core.data.generator import FEATURES
from mlstack_core.drift import compare, validate_reference
from mlstack_core.predictions import PredictionsRepository
from mlstack_core.rows import RowsRepository
from serving import metrics
from serving.model_store import ModelStore

logger = logging.getLogger(__name__)

# A version without a readable reference (none logged, or MLflow briefly down) is asked again after this.
REFERENCE_RETRY_SECONDS = 300.0


@dataclass
class QualityReport:
    """What one pass measured (also returned for tests and logs)."""

    reference_version: str | None = None
    window_rows: int = 0
    prediction_mean: float | None = None
    drift: dict[str, dict[str, float]] = field(default_factory=dict)
    live_mae: float | None = None
    live_mae_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)


class QualityMonitor:
    """Computes drift, live MAE and data size periodically and publishes them as gauges."""

    def __init__(
        self,
        *,
        store: ModelStore,
        reference_loader: Callable[[str], dict[str, Any] | None],
        predictions: Callable[[], PredictionsRepository],
        rows: Callable[[], RowsRepository],
        interval_seconds: float,
        drift_window_rows: int,
        drift_min_rows: int,
        mae_window_rows: int,
    ) -> None:
        self._store = store
        self._reference_loader = reference_loader
        self._predictions = predictions
        self._rows = rows
        self.interval_seconds = interval_seconds
        self.drift_window_rows = drift_window_rows
        self.drift_min_rows = drift_min_rows
        self.mae_window_rows = mae_window_rows
        # The served version's reference (None: not available) and when it was fetched: one entry at most.
        self._reference: tuple[str, dict[str, Any] | None, float] | None = None
        self._indexed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reference(self) -> tuple[str | None, dict[str, Any] | None]:
        """The served version and its drift reference (None when it has none or nothing is served)."""
        model = self._store.model
        if model is None:
            return None, None
        cached = self._reference
        now = time.monotonic()
        if cached is not None and cached[0] == model.version and (
            cached[1] is not None or now - cached[2] < REFERENCE_RETRY_SECONDS
        ):
            return model.version, cached[1]
        reference = self._reference_loader(model.run_id) if model.run_id else None
        if reference is not None:
            try:
                validate_reference(reference, FEATURES)
            except ValueError as exc:
                logger.warning("drift reference of version %s ignored: %s", model.version, exc)
                reference = None
        self._reference = (model.version, reference, now)
        return model.version, reference

    def run_once(self) -> QualityReport:
        """One pass: measure, publish the gauges, return what was measured."""
        report = QualityReport()
        if not self._indexed:
            self._predictions().ensure_indexes()
            self._indexed = True
        version, reference = self.reference()
        report.reference_version = version if reference is not None else None
        metrics.DRIFT_REFERENCE_VERSION.set(metrics.version_number(report.reference_version))
        recent, predicted = self._predictions().recent_inputs(self.drift_window_rows)
        report.window_rows = len(recent)
        metrics.DRIFT_WINDOW_ROWS.set(len(recent))
        if len(predicted):
            report.prediction_mean = float(np.mean(predicted))
            metrics.PREDICTION_MEAN.set(report.prediction_mean)
        if reference is not None and len(recent) >= self.drift_min_rows:
            for name, drift in compare(reference, recent, FEATURES).items():
                metrics.FEATURE_PSI.labels(name).set(drift.psi)
                metrics.FEATURE_KS.labels(name).set(drift.ks)
                report.drift[name] = {"psi": drift.psi, "ks": drift.ks}

        predicted, quality = self._predictions().recent_labelled(self.mae_window_rows)
        report.live_mae_rows = len(predicted)
        metrics.LIVE_MAE_ROWS.set(len(predicted))
        if len(predicted):
            report.live_mae = float(np.mean(np.abs(predicted - quality)))
            metrics.LIVE_MAE.set(report.live_mae)

        rows = self._rows()
        report.rows = {"all": rows.count(), "pending": rows.count_pending()}
        for status, count in report.rows.items():
            metrics.DATA_ROWS.labels(status).set(count)
        metrics.MONITOR_LAST_RUN.set(time.time())
        return report

    def start(self) -> None:
        """Start the periodic passes in a background thread (call in one process only)."""
        self._thread = threading.Thread(target=self._loop, name="quality-monitor", daemon=True)
        self._thread.start()
        logger.info("quality monitor started (every %.0f s)", self.interval_seconds)

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                report = self.run_once()
            except Exception as exc:
                metrics.MONITOR_FAILURES.inc()
                logger.warning("quality monitor pass failed: %s: %s", type(exc).__name__, exc)
                continue
            logger.debug("quality monitor: %s", report)
