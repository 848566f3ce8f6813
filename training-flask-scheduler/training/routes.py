"""HTTP endpoints of the training service (the job's routes come from mlstack_core.job_routes)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, Field

from mlstack_core.appkit import get_settings
from mlstack_core.auth import require_admin
from mlstack_core.openapi import IndexAnswer, RowsQuery, document
from mlstack_core.validation import bounded_int
from training.services import TrainingService

bp = Blueprint("training", __name__)

MAX_PROMOTIONS = 500


class TrainingIndex(IndexAnswer):
    """``GET /`` of training: the registered model, the experiment and the promotion rule in words."""

    model_name: str
    experiment: str
    promotion_rule: str


class AliasVersion(BaseModel):
    """The version holding an alias, and the promotion decision recorded on it (as tags)."""

    version: str
    run_id: str | None
    created_at: str
    promotion: dict[str, str]


class ModelAliasesAnswer(BaseModel):
    """``GET /model``: which versions hold champion, previous_champion and challenger."""

    model_name: str
    aliases: dict[str, AliasVersion]
    rule: str
    read_at: str
    stale: bool = Field(description="true when the registry is down and this is the last answer it gave")


class Decision(BaseModel):
    """A recorded promotion decision (promoted, rejected, rollback...)."""

    outcome: str = Field(examples=["promoted"])
    model_name: str
    reason: str
    decided_at: str


class PromotionsAnswer(BaseModel):
    """``GET /promotions``: the latest decisions, newest first."""

    promotions: list[Decision]


class RollbackAnswer(Decision):
    """``POST /model/rollback``: the decision recorded, and whether serving was told to reload."""

    champion_version: str | None
    previous_champion_version: str | None
    recorded_in_mongodb: bool
    serving_nudge: dict[str, Any]


def _service() -> TrainingService:
    return current_app.extensions["training"]


@bp.get("/")
@document(responses={200: TrainingIndex})
def index():
    """What this service is and its endpoints."""
    settings = get_settings()
    return jsonify(
        service="training",
        model_name=settings.model_name,
        experiment=settings.mlflow_experiment_name,
        promotion_rule=_service().rule.describe(),
        endpoints={
            "GET /jobs/training, GET /getTrainingJob/": "the schedule",
            "PUT /jobs/training, POST /modifyTrainingJob/": "change the schedule (admin token)",
            "POST /jobs/training/pause|resume, GET /pauseTrainingJob/ /resumeTrainingJob/":
                "pause/resume the schedule (admin token)",
            "POST /jobs/training/run, GET /manualTraining/": "train now: 202 + run id; ?wait=N waits (admin token)",
            "GET /jobs/runs/<run_id>": "a run's status and summary (data source, metrics, promotion decision)",
            "GET /model": "which versions hold champion, previous_champion and challenger",
            "GET /promotions?n=20": "the latest promotion decisions",
            "POST /model/rollback": "champion back to previous_champion, then serving reloads (admin token)",
            "GET /health, GET /ready, GET /metrics": "probes and Prometheus metrics",
            "GET /openapi.json, GET /docs": "this API's contract (OpenAPI 3.1) and Swagger UI",
        },
    )


@bp.get("/model")
@document(responses={200: ModelAliasesAnswer})
def model_status():
    """The versions holding the aliases and their recorded promotion decision."""
    return jsonify(_service().model_status())


@bp.get("/promotions")
@document(query=RowsQuery, responses={200: PromotionsAnswer})
def promotions():
    """The latest promotion decisions, newest first (default 20)."""
    n = bounded_int(request.args.get("n"), name="n", default=20, low=1, high=MAX_PROMOTIONS)
    return jsonify(promotions=_service().promotions(n))


@bp.post("/model/rollback")
@document(responses={200: RollbackAnswer})
@require_admin
def rollback():
    """Make previous_champion the champion again (409 when there is none) and tell serving to reload."""
    return jsonify(_service().rollback(g.get("request_id")))
