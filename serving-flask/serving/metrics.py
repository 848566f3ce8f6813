"""Prometheus metrics of the serving service (request metrics come from mlstack_core.metrics).

Per-worker facts (which version a worker serves, since when) use ``liveall``: one series per live worker,
labelled ``pid`` by prometheus_client's multiprocess collector, dropped when the worker exits. The quality
monitor runs in one worker (see serving.quality); its gauges use ``livemostrecent`` so a single series per
feature remains, and disappears with that worker until the next one takes over.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PREDICTIONS = Counter("serving_predictions_total", "Rows predicted (single and batch requests).")
PREDICTIONS_STORED = Counter("serving_predictions_stored_total", "Predictions written to MongoDB.")
PREDICTIONS_DROPPED = Counter(
    "serving_predictions_dropped_total",
    "Anonymous predictions not stored: buffer full (MongoDB down or slow), refused by MongoDB, left at shutdown.",
)
PREDICTION_BUFFER = Gauge(
    "serving_prediction_buffer_rows", "Predictions waiting to be written to MongoDB.", multiprocess_mode="livesum"
)

MODEL_VERSION = Gauge(
    "serving_model_version",
    "Registry version of the model this worker serves (0 while none is loaded); one series per worker pid.",
    multiprocess_mode="liveall",
)
MODEL_LOADED_AT = Gauge(
    "serving_model_loaded_timestamp_seconds",
    "Unix time this worker loaded the model it serves; time since load = time() - this.",
    multiprocess_mode="liveall",
)
MODEL_LOADS = Counter(
    "serving_model_loads_total",
    "Model loads by outcome (success, failure, refused: not skops or a type off the allow-list).",
    ["outcome"],
)

FEATURE_PSI = Gauge(
    "serving_feature_drift_psi",
    "Population stability index of recent predicted inputs against the champion's training reference.",
    ["feature"],
    multiprocess_mode="livemostrecent",
)
FEATURE_KS = Gauge(
    "serving_feature_drift_ks",
    "Binned Kolmogorov-Smirnov statistic of recent predicted inputs against the champion's training reference.",
    ["feature"],
    multiprocess_mode="livemostrecent",
)
DRIFT_WINDOW_ROWS = Gauge(
    "serving_drift_window_rows", "Recent predicted rows the drift figures were computed on.",
    multiprocess_mode="livemostrecent",
)
PREDICTION_MEAN = Gauge(
    "serving_prediction_mean", "Mean predicted quality over the recent predictions of the drift window.",
    multiprocess_mode="livemostrecent",
)
DRIFT_REFERENCE_VERSION = Gauge(
    "serving_drift_reference_version",
    "Model version whose training reference drift is measured against (0: none available).",
    multiprocess_mode="livemostrecent",
)
LIVE_MAE = Gauge(
    "serving_live_mae",
    "Mean absolute error of recent predictions of ETL rows whose true quality is known.",
    multiprocess_mode="livemostrecent",
)
LIVE_MAE_ROWS = Gauge(
    "serving_live_mae_rows", "Rows the live MAE was computed on.", multiprocess_mode="livemostrecent"
)
DATA_ROWS = Gauge(
    "data_rows_stored", "Rows in the wine rows collection (status: all, pending).", ["status"],
    multiprocess_mode="livemostrecent",
)
MONITOR_LAST_RUN = Gauge(
    "serving_monitor_last_run_timestamp_seconds",
    "Unix time the quality monitor last finished a pass (drift, live MAE, data size).",
    multiprocess_mode="livemostrecent",
)
MONITOR_FAILURES = Counter("serving_monitor_failures_total", "Quality monitor passes that failed.")


def version_number(version: str | None) -> float:
    """A registry version as a gauge value (MLflow versions are integers); -1 for anything else."""
    if version is None:
        return 0.0
    try:
        return float(int(version))
    except ValueError:
        return -1.0
