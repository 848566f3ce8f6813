"""App factory of the serving service: ``gunicorn "serving.app:create_app()"``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from mlstack_core.appkit import add_readiness_check, create_base_app
from mlstack_core.jobs import LeaderElector
from mlstack_core.lifecycle import on_shutdown
from mlstack_core.predictions import PredictionsRepository
from mlstack_core.rows import RowsRepository
from mlstack_core.settings import load_settings
from serving import legacy, metrics, routes, scoring
from serving.model_store import ModelStore, RegistryClient
from serving.prediction_writer import PredictionWriter
from serving.quality import QualityMonitor
from serving.services import seed_in_background
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)



def create_app(test_config: dict[str, Any] | None = None, *, registry: Any = None) -> Flask:
    """Build the serving app; tests pass settings as test_config and may pass a registry stand-in."""
    settings = load_settings(ServingSettings, test_config)
    settings.configure_registry_client()
    app = create_base_app(__name__, settings, max_body_bytes=8 * 1024 * 1024)
    mongo = app.extensions["mongo"]
    # Shutdown callbacks run newest first: the client closes after the writer's final flush.
    on_shutdown(mongo.close)

    if registry is None:
        registry = RegistryClient(settings.mlflow_tracking_uri)
    store = ModelStore(
        registry,
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
        if not store.wait_first_check(settings.model_startup_wait_seconds):
            logger.warning("no answer from the registry within %.0f s: taking requests without a model (503) until "
                           "the watcher loads one", settings.model_startup_wait_seconds)

    # STORE_PREDICTIONS governs anonymous predictions only; the ETL's row-id predictions are always stored.
    if settings.store_predictions:
        writer = PredictionWriter(
            lambda: PredictionsRepository(mongo.db()[settings.predictions_collection]),
            flush_seconds=settings.prediction_flush_seconds,
            max_buffered_rows=settings.prediction_buffer_max,
            on_written=metrics.PREDICTIONS_STORED.inc,
            on_dropped=metrics.PREDICTIONS_DROPPED.inc,
            on_buffered=metrics.PREDICTION_BUFFER.set,
        )
        writer.start()
        on_shutdown(writer.close)
        app.extensions["prediction_writer"] = writer

    if settings.monitor_enabled:
        _start_quality_monitor(settings, store, registry, mongo)

    seed_in_background(mongo, settings.mongo_collection, settings.seed_rows)
    app.register_blueprint(routes.bp)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(scoring.bp)
    return app


def _start_quality_monitor(settings: ServingSettings, store: ModelStore, registry: Any, mongo: Any) -> None:
    """Run the quality monitor in the one worker that holds its lock (every worker competes, one wins)."""
    monitor = QualityMonitor(
        store=store,
        # A registry stand-in without references (tests) simply means no drift figures.
        reference_loader=getattr(registry, "drift_reference", lambda run_id: None),
        predictions=lambda: PredictionsRepository(mongo.db()[settings.predictions_collection]),
        rows=lambda: RowsRepository(mongo.db()[settings.mongo_collection], predictions=settings.predictions_collection),
        interval_seconds=settings.monitor_interval_seconds,
        drift_window_rows=settings.drift_window_rows,
        drift_min_rows=settings.drift_min_rows,
        mae_window_rows=settings.live_mae_window_rows,
    )
    elector = LeaderElector(settings.state_dir / "serving-monitor.lock", monitor.start)
    elector.start()
    on_shutdown(elector.stop)
    on_shutdown(monitor.stop)
