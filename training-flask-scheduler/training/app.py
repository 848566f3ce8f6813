"""App factory of the training service: ``gunicorn "training.app:create_app()"``."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask

from mlstack_core.appkit import add_readiness_check, create_base_app
from mlstack_core.job_routes import install_job
from mlstack_core.jobs import IntervalSpec, JobDefinition, JobService, RunContext
from mlstack_core.lifecycle import on_shutdown
from mlstack_core.settings import load_settings
from training import legacy, routes
from training.abandoned import fail_abandoned_mlflow_runs
from training.nudge import ServingNudger
from training.registry import ModelRegistry
from training.services import TrainingService
from training.settings import TrainingSettings

JOB_NAME = "training"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the training app; training runs in the scheduler process, once across replicas (mlstack_core.jobs)."""
    settings = load_settings(TrainingSettings, test_config)
    settings.configure_registry_client()
    app = create_base_app(__name__, settings)
    mongo = app.extensions["mongo"]
    on_shutdown(mongo.close)

    registry = ModelRegistry(
        settings.mlflow_tracking_uri, model_name=settings.model_name, experiment_name=settings.mlflow_experiment_name
    )
    nudger = ServingNudger(
        settings.load_model_api, token=settings.serving_token(), timeout=settings.serving_nudge_timeout_seconds,
        retries=settings.serving_nudge_retries,
    )
    service = TrainingService(settings, registry=registry, mongo=mongo, nudger=nudger)
    app.extensions["training"] = service
    add_readiness_check(app, "mlflow", registry.ping)

    stop = threading.Event()
    on_shutdown(stop.set)

    def training_job(ctx: RunContext) -> dict[str, Any]:
        return service.run(ctx.run_id, request_id=ctx.request_id)

    def abandoned(record: dict[str, Any]) -> None:
        fail_abandoned_mlflow_runs(registry, job_run_id=record["_id"])

    def bootstrap(jobs: JobService) -> None:
        service.bootstrap(jobs, stop=stop)

    job = JobDefinition(
        JOB_NAME, training_job, IntervalSpec(seconds=settings.training_interval_seconds),
        on_leader_start=bootstrap if settings.bootstrap_enabled else None, on_abandoned=abandoned,
    )
    install_job(app, job, run_scheduler=settings.scheduler_enabled)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(routes.bp)
    return app
