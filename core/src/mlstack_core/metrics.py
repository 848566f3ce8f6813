"""Prometheus metrics, correct under several Gunicorn workers.

Multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is first imported;
the shared Gunicorn config (:mod:`mlstack_core.gunicorn_conf`) sets it, wipes it at start and marks dead
workers. Every gauge names its ``multiprocess_mode``: how the values of several workers merge into one.

The HTTP side (timing every request, serving /metrics) is :func:`mlstack_core.appkit.install_metrics`, so the
job runner and the services count without importing Flask.

Cardinality is bounded by construction: requests are labelled by route template (unknown paths share
``<unmatched>``), by method from a fixed list (anything else is ``OTHER``) and by status code, so a scanner
sending random paths or verbs cannot grow /metrics. monitoring/README.md lists every metric.
"""

from __future__ import annotations

import os
import time

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)

UNMATCHED_ROUTE = "<unmatched>"
OTHER_METHOD = "OTHER"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes would drown the real traffic and are scraped every few seconds: keep them out.
EXCLUDED_PATHS = frozenset({"/health", "/ready", "/metrics"})
JOB_OUTCOMES = ("success", "failure")

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served.", ["service", "route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_progress", "HTTP requests being served.", ["service"], multiprocess_mode="livesum"
)
# "job_name", not "job": Prometheus attaches its scrape job as the "job" label and would rename ours exported_job.
JOB_RUNS = Counter("job_runs_total", "Scheduled or manual job runs by outcome.", ["service", "job_name", "outcome"])
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "Job run duration in seconds.",
    ["service", "job_name"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
JOB_LAST_SUCCESS = Gauge(
    "job_last_success_timestamp_seconds", "Unix time of the last successful run.", ["service", "job_name"],
    multiprocess_mode="max",
)
# Only the scheduler leader runs jobs; "mostrecent" keeps its last value when a new leader takes over.
JOB_LAST_DURATION = Gauge(
    "job_last_duration_seconds", "Duration in seconds of the last run, failed or not.", ["service", "job_name"],
    multiprocess_mode="mostrecent",
)


def registry() -> CollectorRegistry:
    """The registry /metrics exposes: every worker's values merged in multiprocess mode, else the default."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


def method_label(method: str) -> str:
    """The request method as a label: one of KNOWN_METHODS, else OTHER (clients may send any token)."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def declare_job(service: str, job: str) -> None:
    """Create a job's run counters at zero, so "no failure yet" is a 0 on dashboards rather than no data."""
    for outcome in JOB_OUTCOMES:
        JOB_RUNS.labels(service, job, outcome)


def record_job_run(service: str, job: str, *, duration: float, ok: bool) -> None:
    """Count a finished run, its duration and, when it succeeded, when."""
    JOB_DURATION.labels(service, job).observe(duration)
    JOB_LAST_DURATION.labels(service, job).set(duration)
    JOB_RUNS.labels(service, job, "success" if ok else "failure").inc()
    if ok:
        JOB_LAST_SUCCESS.labels(service, job).set(time.time())
