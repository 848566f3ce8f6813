"""App factory of the ETL service: ``gunicorn "etl.app:create_app()"``."""

from __future__ import annotations

from typing import Any

from flask import Flask

from etl import legacy, routes, services
from etl.settings import EtlSettings
from mlstack_core.appkit import create_base_app
from mlstack_core.job_routes import install_job
from mlstack_core.jobs import IntervalSpec, JobDefinition, RunContext
from mlstack_core.lifecycle import on_shutdown
from mlstack_core.rows import RowsRepository
from mlstack_core.settings import load_settings

JOB_NAME = "etl"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the ETL app; its job runs in the scheduler process, once across replicas (mlstack_core.jobs)."""
    settings = load_settings(EtlSettings, test_config)
    app = create_base_app(__name__, settings, max_body_bytes=16 * 1024 * 1024)
    mongo = app.extensions["mongo"]
    on_shutdown(mongo.close)
    forwarder = services.Forwarder(
        settings.predict_api, service_token=settings.service_token.get_secret_value(),
        timeout=settings.predict_timeout_seconds, retries=settings.predict_retries,
    )
    app.extensions["forwarder"] = forwarder

    def etl_job(ctx: RunContext) -> dict[str, Any]:
        repo = RowsRepository(mongo.db()[settings.mongo_collection], predictions=settings.predictions_collection)
        return services.run_etl(
            ctx.run_id, repo=repo, forwarder=forwarder, batch_size=settings.etl_batch_size,
            backfill_limit=settings.backfill_limit, sweep_rows=settings.sweep_rows, request_id=ctx.request_id,
        )

    job = JobDefinition(JOB_NAME, etl_job, IntervalSpec(seconds=settings.etl_interval_seconds))
    install_job(app, job, run_scheduler=settings.scheduler_enabled)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(routes.bp)
    return app
