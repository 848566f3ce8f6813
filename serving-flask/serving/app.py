"""App factory of the serving service: ``gunicorn "serving.app:create_app()"``."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from mlstack_core.appkit import add_readiness_check, create_base_app
from mlstack_core.lifecycle import on_shutdown
from mlstack_core.settings import load_settings
from serving import routes
from serving.model_store import ModelStore, RegistryClient
from serving.prediction_writer import PredictionWriter
from serving.services import seed_in_background
from serving.settings import ServingSettings

# A down registry must not hang a worker: MLflow's client defaults are 120 s and 7 retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def create_app(test_config: dict[str, Any] | None = None, *, registry: Any = None) -> Flask:
    """Build the serving app; tests pass settings as test_config and may pass a registry stand-in."""
    settings = load_settings(ServingSettings, test_config)
    app = create_base_app(__name__, settings, max_body_bytes=8 * 1024 * 1024)
    mongo = app.extensions["mongo"]
    # Shutdown callbacks run newest first: the client closes after the writer's final flush.
    on_shutdown(mongo.close)

    store = ModelStore(
        registry if registry is not None else RegistryClient(settings.mlflow_tracking_uri),
        name=settings.model_name,
        alias=settings.model_alias,
        poll_seconds=settings.model_poll_seconds,
        marker=settings.state_dir / "serving-reload.marker",
    )
    app.extensions["model_store"] = store
    add_readiness_check(app, "model", lambda: (store.model is not None, store.last_error or "loaded"))
    if settings.model_watch:
        store.start_watching()
        on_shutdown(store.stop)

    if settings.store_predictions:
        writer = PredictionWriter(
            lambda: mongo.db()[settings.predictions_collection],
            flush_seconds=settings.prediction_flush_seconds,
            max_buffered_rows=settings.prediction_buffer_max,
        )
        writer.start()
        on_shutdown(writer.close)
        app.extensions["prediction_writer"] = writer

    seed_in_background(mongo, settings.mongo_collection, settings.seed_rows)
    app.register_blueprint(routes.bp)
    return app
