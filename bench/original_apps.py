"""The original template's ``/predictDummy/`` path, reproduced for comparison only (nothing here is product code).

Two apps, both serving the registered version loaded once per worker as a pyfunc, run by Gunicorn sync workers:

``faithful_app()``: the path the original's users run. Per request the route calls the prediction helper twice
(once for its INFO log line and the ``request_prediction_dummy`` gauge, once for the answer); each call builds
``pd.DataFrame(request.json, index=[0])``, calls the pyfunc model and ``str(model)``. Logging goes to the root
logger through a RotatingFileHandler only (the original's ``logging_config.yaml``), and the Prometheus
middleware runs on every request: a ``before_request`` timer, then ``after_request`` Counter ``request_count``
(app, method, endpoint, status), Histogram ``request_latency``, Gauge ``request_latency_seconds``.

``light_app()``: one predict per request, no logging, no metrics: a lower bound of the original's cost.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from flask import Flask, g, jsonify, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

APP_LABEL = "serving"


def _load_model() -> Any:
    """The registered version named by MODEL_URI, as a pyfunc (once per worker)."""
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.pyfunc.load_model(os.environ["MODEL_URI"])


def _health(app: Flask) -> None:
    @app.route("/health")
    def health():
        return jsonify(status="ok")


def light_app() -> Flask:
    """One predict per request, no logging, no metrics."""
    app = Flask(__name__)
    model = _load_model()

    @app.route("/predictDummy/", methods=["POST"])
    def predict_dummy():
        data = pd.DataFrame(request.json, index=[0])
        prediction = model.predict(data)
        return jsonify({"modelInfo": str(model), "result": prediction[0]})

    _health(app)
    return app


def _configure_file_logging(log_file: Path) -> None:
    """Root logger at INFO with one rotating file handler, as the original's logging_config.yaml sets it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * 1024 * 1024, backupCount=5,
                                                   encoding="utf8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _install_metrics(app: Flask, registry: CollectorRegistry) -> Gauge:
    """The original's middleware: a timer before, count and latency after every request; returns the dummy gauge."""
    request_count = Counter("request_count", "App Request Count", ["app_name", "method", "endpoint", "http_status"],
                            registry=registry)
    request_latency = Histogram("request_latency", "Request latency", ["app_name", "endpoint"], registry=registry)
    latency_gauge = Gauge("request_latency_seconds", "Request latency", ["app_name", "endpoint"], registry=registry)
    prediction_gauge = Gauge("request_prediction_dummy", "Prediction of /predictDummy/",
                             ["app_name", "method", "endpoint"], registry=registry)

    @app.before_request
    def start_timer():
        g.start_time = time.time()

    @app.after_request
    def record(response):
        elapsed = time.time() - g.start_time
        request_latency.labels(APP_LABEL, request.path).observe(elapsed)
        latency_gauge.labels(APP_LABEL, request.path).set(elapsed)
        request_count.labels(APP_LABEL, request.method, request.path, response.status_code).inc()
        return response

    return prediction_gauge


def faithful_app(registry: CollectorRegistry | None = None) -> Flask:
    """The original's /predictDummy/ as written: two predictions, an INFO log line and metrics per request."""
    _configure_file_logging(Path(os.environ.get("ORIGINAL_LOG_FILE", "logs/original/info.log")))
    app = Flask(__name__)
    model = _load_model()
    prediction_gauge = _install_metrics(app, registry or REGISTRY)

    def predict_etl_data(data: Any) -> dict[str, Any]:
        return {"modelInfo": str(model), "result": model.predict(pd.DataFrame(data, index=[0]))[0]}

    @app.route("/predictDummy/", methods=["POST"])
    def predict_dummy():
        result = predict_etl_data(request.json)["result"]
        logger.info("PREDICT DUMMY DATA : %s", result)
        prediction_gauge.labels("prediction dummy", request.method, request.path).set(result)
        return jsonify(predict_etl_data(request.json))

    _health(app)
    return app
