"""Prometheus metrics of the training service (run counts and durations come from mlstack_core's JOB_* metrics).

Only the leader process trains, so its gauges are the newest; ``mostrecent`` makes /metrics show the latest
value written by any worker under Gunicorn's multiprocess mode instead of one series per process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MODEL_METRIC = Gauge(
    "training_model_metric",
    "Holdout metric of the champion and of the last challenger, from the last training run.",
    ["role", "metric"],
    multiprocess_mode="mostrecent",
)
DATA_ROWS = Gauge(
    "training_data_rows", "Rows the last training run used.", ["source"], multiprocess_mode="mostrecent"
)
DATA_FALLBACKS = Counter(
    "training_data_fallbacks_total", "Training runs that used generated rows instead of MongoDB's."
)
PROMOTIONS = Counter(
    "training_promotions_total", "Promotion decisions by outcome (promoted, rejected, rollback).", ["outcome"]
)
NUDGE_FAILURES = Counter(
    "training_serving_nudge_failures_total", "Reload requests to serving that failed (serving also polls)."
)
VERSIONS_DELETED = Counter("training_model_versions_deleted_total", "Model versions removed by retention.")
RETENTION_FAILURES = Counter(
    "training_retention_failures_total", "Model versions retention could not delete (kept for the next run)."
)
