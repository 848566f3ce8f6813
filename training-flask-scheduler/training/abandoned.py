"""Closing what a training run left behind when its process died: its MLflow run, marked FAILED."""

from __future__ import annotations

import logging

from training.registry import ModelRegistry

logger = logging.getLogger(__name__)


def fail_abandoned_mlflow_runs(registry: ModelRegistry, *, job_run_id: str) -> list[str]:
    """Mark FAILED the MLflow runs still RUNNING that a job run (tag ``job_run_id``) started; returns their ids."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name(registry.experiment_name)
    if experiment is None:
        return []
    # job_run_id is one of our 32-hex run ids (checked by the job machinery), safe inside the filter's quotes.
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.job_run_id = '{job_run_id}' and attributes.status = 'RUNNING'",
        max_results=10,
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="FAILED")
        logger.warning("MLflow run %s of abandoned training run %s marked FAILED", run.info.run_id, job_run_id)
    return [run.info.run_id for run in runs]
