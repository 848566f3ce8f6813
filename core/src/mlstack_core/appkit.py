"""The common part of every service's app factory: logging, traces, errors, request ids, metrics, probes, MongoDB."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout, ServerSelectionTimeoutError

from mlstack_core import metrics, request_id
from mlstack_core.errors import register_error_handlers
from mlstack_core.json_request import JsonProvider, JsonRequest
from mlstack_core.logs import configure_logging
from mlstack_core.mongo import MongoProvider
from mlstack_core.openapi import HealthAnswer, ReadyAnswer, document, install_openapi
from mlstack_core.settings import BaseServiceSettings
from mlstack_core.tracing import install_tracing

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], tuple[bool, str]]


def create_base_app(
    import_name: str, settings: BaseServiceSettings, *, max_body_bytes: int = 1024 * 1024
) -> Flask:
    """A Flask app with everything the services share; the service adds its blueprints and checks."""
    configure_logging(level=settings.log_level, log_dir=settings.log_dir, config_file=settings.log_config,
                      log_format=settings.log_format, to_file=settings.log_file)
    app = Flask(import_name)
    app.request_class = JsonRequest
    app.json = JsonProvider(app)
    app.config.update(
        MLSTACK_SETTINGS=settings,
        MAX_CONTENT_LENGTH=max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    # Before any client is made (pymongo's command listeners apply to clients created afterwards).
    install_tracing(app, settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    mongo = MongoProvider(
        settings.mongo_connection_uri(), settings.mongo_db, timeout_ms=settings.mongo_timeout_ms,
        app_name=settings.service_name,
    )
    app.extensions["mongo"] = mongo
    app.extensions["readiness"] = {"mongodb": lambda: _ping(mongo)}
    install_request_id(app)
    install_body_drain(app)
    register_error_handlers(app)
    install_metrics(app, settings.service_name)
    _register_probes(app)
    install_openapi(app, title=f"mlstack {settings.service_name}")
    logger.info("%s app created", settings.service_name)
    return app


def install_request_id(app: Flask) -> None:
    """Attach a request id to every request (for logs and downstream calls) and echo it on the response."""

    @app.before_request
    def _assign() -> None:
        g.request_id = request_id.accepted(request.headers.get(request_id.HEADER, ""))
        g.request_id_token = request_id.bind(g.request_id)

    @app.after_request
    def _echo(response):
        if g.get("request_id"):
            response.headers[request_id.HEADER] = g.request_id
        return response

    @app.teardown_request
    def _release(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id.unbind(token)


def install_body_drain(app: Flask) -> None:
    """Read what is left of a request body once the answer is made (a 401 before the body was looked at)."""

    @app.after_request
    def _drain(response):
        # Unread, the body stays in the socket: Gunicorn closes the connection with data pending, the kernel
        # resets it, and Nginx, still sending the body, answers 502/503 instead of our 401 (found by the fuzzer:
        # an anonymous 1.5 MB /ingest). Bounded by MAX_CONTENT_LENGTH, which Werkzeug's stream enforces.
        with contextlib.suppress(Exception):  # a body over the limit, or a client gone: nothing left to keep
            request.stream.exhaust()
        return response


def install_metrics(app: Flask, service: str) -> None:
    """Count and time every request by route template, and serve /metrics."""

    @app.before_request
    def _start_timer() -> None:
        if request.path not in metrics.EXCLUDED_PATHS:
            g.metrics_started = time.perf_counter()
            metrics.HTTP_IN_FLIGHT.labels(service).inc()

    @app.teardown_request
    def _record(_exc: BaseException | None) -> None:
        started = g.pop("metrics_started", None)
        if started is None:
            return
        metrics.HTTP_IN_FLIGHT.labels(service).dec()
        route = request.url_rule.rule if request.url_rule is not None else metrics.UNMATCHED_ROUTE
        method = metrics.method_label(request.method)
        status = g.get("response_status", 500)
        metrics.HTTP_REQUESTS.labels(service, route, method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(service, route, method).observe(time.perf_counter() - started)

    @app.after_request
    def _remember_status(response):
        g.response_status = response.status_code
        return response

    @app.get("/metrics", endpoint="metrics")
    def metrics_endpoint() -> Response:
        """Prometheus exposition of this service (all workers)."""
        return Response(generate_latest(metrics.registry()), mimetype=CONTENT_TYPE_LATEST)


def add_readiness_check(app: Flask, name: str, check: ReadinessCheck) -> None:
    """Add a dependency check to /ready."""
    app.extensions["readiness"][name] = check


def get_mongo() -> MongoProvider:
    """The MongoDB provider of the current app."""
    return current_app.extensions["mongo"]


def get_settings() -> Any:
    """The typed settings of the current app."""
    return current_app.config["MLSTACK_SETTINGS"]


def _ping(mongo: MongoProvider) -> tuple[bool, str]:
    # Raises on failure: /ready logs the driver's text (hosts, ports, timeouts) and answers a generic word.
    mongo.client().admin.command("ping")
    return True, "ok"


_TIMEOUTS = (TimeoutError, requests.Timeout, NetworkTimeout, ExecutionTimeout)
_UNREACHABLE = (ConnectionError, requests.ConnectionError, ConnectionFailure)


def public_failure(exc: BaseException) -> str:
    """A word for why a dependency call failed that names no host, port or driver detail."""
    if isinstance(exc, ServerSelectionTimeoutError):  # no server answered within the selection timeout
        return "unreachable"
    if isinstance(exc, _TIMEOUTS):
        return "timeout"
    if isinstance(exc, _UNREACHABLE):
        return "unreachable"
    return "failed"


def _register_probes(app: Flask) -> None:
    @app.get("/health")
    @document(responses={200: HealthAnswer})
    def health():
        """Liveness: the process answers."""
        return jsonify(status="ok", service=get_settings().service_name)

    @app.get("/ready")
    @document(responses={200: ReadyAnswer, 503: ReadyAnswer})
    def ready():
        """Readiness: every dependency check passes (503 with the failing ones otherwise)."""
        results = {}
        for name, check in app.extensions["readiness"].items():
            try:
                ok, detail = check()
            except Exception as exc:
                # The exception text names internal hosts and ports: it goes to the log, not to the caller.
                logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
                ok, detail = False, public_failure(exc)
            results[name] = {"ok": ok, "detail": detail}
        status = 200 if all(r["ok"] for r in results.values()) else 503
        return jsonify(ready=status == 200, checks=results), status
