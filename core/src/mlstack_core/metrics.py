"""Prometheus metrics installed with one call, correct under several Gunicorn workers.

Multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is first imported;
the shared Gunicorn config (:mod:`mlstack_core.gunicorn_conf`) sets it, wipes it at start and marks dead
workers. Requests are labelled by route template, never by raw path, so a scanner cannot grow /metrics.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

UNMATCHED_ROUTE = "<unmatched>"
# Probes would drown the real traffic and are scraped every few seconds: keep them out.
EXCLUDED_PATHS = frozenset({"/health", "/ready", "/metrics"})

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
JOB_RUNS = Counter("job_runs_total", "Scheduled or manual job runs by outcome.", ["service", "job", "outcome"])
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "Job run duration in seconds.",
    ["service", "job"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
JOB_LAST_SUCCESS = Gauge(
    "job_last_success_timestamp_seconds", "Unix time of the last successful run.", ["service", "job"],
    multiprocess_mode="max",
)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


def install_metrics(app: Flask, service: str) -> None:
    """Count and time every request by route template, and serve /metrics."""

    @app.before_request
    def _start_timer() -> None:
        if request.path not in EXCLUDED_PATHS:
            g.metrics_started = time.perf_counter()
            HTTP_IN_FLIGHT.labels(service).inc()

    @app.teardown_request
    def _record(_exc: BaseException | None) -> None:
        started = g.pop("metrics_started", None)
        if started is None:
            return
        HTTP_IN_FLIGHT.labels(service).dec()
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        status = g.get("response_status", 500)
        HTTP_REQUESTS.labels(service, route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(service, route, request.method).observe(time.perf_counter() - started)

    @app.after_request
    def _remember_status(response):
        g.response_status = response.status_code
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition of this service (all workers)."""
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
