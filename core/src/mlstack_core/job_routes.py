"""HTTP endpoints of a scheduled job, shared by the ETL and training services (and the blueprint of their aliases)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Flask, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, Field, RootModel

from mlstack_core.auth import require_admin
from mlstack_core.jobs import JobDefinition, JobService, is_run_id, parse_schedule, public_record
from mlstack_core.jobs.schedule import CronSpec, IntervalSpec, ScheduleUpdate
from mlstack_core.openapi import LEGACY_BLUEPRINT_SUFFIX, WaitQuery, document
from mlstack_core.service_errors import ServiceError

# Below every timeout on a request's path: Nginx's proxy_read_timeout (30 s) and Gunicorn's timeout (60 s).
MAX_WAIT_SECONDS = 20


class ScheduleBody(RootModel[Annotated[IntervalSpec | CronSpec, Field(discriminator="trigger")] | ScheduleUpdate]):
    """``{"trigger": "interval", "minutes": 5}``, ``{"trigger": "cron", "cron": "*/5 * * * *"}`` or either as
    ``{"schedule": {...}}`` (parse_schedule validates it)."""


class JobAnswer(BaseModel):
    """A job's schedule and state (JobService.get_job), for the OpenAPI document."""

    id: str
    schedule: dict[str, Any] = Field(examples=[{"trigger": "interval", "seconds": 300, "minutes": 0, "hours": 0}])
    paused: bool
    next_run_time: str | None
    updated_at: str | None
    last_run: dict[str, Any] | None


class RunAnswer(BaseModel):
    """A run record as clients see it (jobs.public_record) and where to poll it."""

    run_id: str = Field(examples=["0f3c2a9e8b7d4c1e9a2b3c4d5e6f7a8b"])
    job: str
    status: Literal["queued", "running", "succeeded", "failed"]
    trigger: Literal["manual", "schedule"] | None
    fire_time: str | None
    requested_at: str | None
    started_at: str | None
    finished_at: str | None
    request_id: str | None
    epoch: int | None
    result: dict[str, Any] | None
    error: str | None
    status_url: str


_RUN = {200: RunAnswer, 202: RunAnswer}


def get_job_service() -> JobService:
    """The job service of the current app."""
    return current_app.extensions["job_service"]


def _json_body() -> object:
    body = request.get_json(silent=True)
    if body is None:
        raise ServiceError("INVALID_JSON", "Send a JSON body with Content-Type: application/json.")
    return body


def _run_response(record: dict):
    status = 202 if record["status"] in {"queued", "running"} else 200
    body = {**public_record(record), "status_url": url_for("jobs.run_status", run_id=record["run_id"])}
    return jsonify(body), status


@document(responses={200: JobAnswer})
def get_job(job: str | None = None):
    """The job's schedule, pause state and next run time."""
    service = _checked(job)
    return jsonify(service.get_job())


@document(json=ScheduleBody, responses={200: JobAnswer})
@require_admin
def modify_job(job: str | None = None):
    """Change the schedule: an interval or a cron expression, validated."""
    service = _checked(job)
    spec = parse_schedule(_json_body())
    return jsonify(service.modify(spec))


@document(responses={200: JobAnswer})
@require_admin
def pause_job(job: str | None = None):
    """Pause the schedule."""
    return jsonify(_checked(job).set_paused(True))


@document(responses={200: JobAnswer})
@require_admin
def resume_job(job: str | None = None):
    """Resume the schedule."""
    return jsonify(_checked(job).set_paused(False))


@document(query=WaitQuery, responses=_RUN)
@require_admin
def run_job(job: str | None = None):
    """Queue a run now; answers 202 with its id (``?wait=N`` waits up to N <= 20 seconds for the result)."""
    service = _checked(job)
    wait = request.args.get("wait", "0")
    try:
        wait_seconds = float(wait)
    except ValueError:
        raise ServiceError("INVALID_PARAMETER", "wait must be a number of seconds.") from None
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise ServiceError("INVALID_PARAMETER", f"wait must be between 0 and {MAX_WAIT_SECONDS} seconds.")
    record = service.request_run(g.get("request_id"))
    if wait_seconds:
        record = service.wait_for(record["run_id"], wait_seconds) or record
    return _run_response(record)


@document(responses=_RUN)
def run_status(run_id: str):
    """A run's status and result."""
    # A malformed id is answered without a lookup, and never echoed back (it may be anything).
    record = get_job_service().get_run(run_id) if is_run_id(run_id) else None
    if record is None:
        raise ServiceError("RUN_NOT_FOUND", "No run with this id (run ids are 32 hexadecimal characters).")
    return _run_response(record)


def make_job_blueprint() -> Blueprint:
    """The job's routes under /jobs/<job> and /jobs/runs/<run_id>."""
    bp = Blueprint("jobs", __name__)
    bp.add_url_rule("/jobs/<job>", view_func=get_job, methods=["GET"])
    bp.add_url_rule("/jobs/<job>", view_func=modify_job, methods=["PUT"])
    bp.add_url_rule("/jobs/<job>/pause", view_func=pause_job, methods=["POST"])
    bp.add_url_rule("/jobs/<job>/resume", view_func=resume_job, methods=["POST"])
    bp.add_url_rule("/jobs/<job>/run", view_func=run_job, methods=["POST"])
    bp.add_url_rule("/jobs/runs/<run_id>", view_func=run_status, methods=["GET"])
    return bp


def make_legacy_job_blueprint(noun: str) -> Blueprint:
    """The original template's job aliases (``/get<noun>Job/``... ``/manual<noun>/``) for a service's legacy module.

    Same views as the new routes; the blueprint is named ``<noun>_legacy``, so /openapi.json marks them deprecated.
    """
    bp = Blueprint(f"{noun.lower()}{LEGACY_BLUEPRINT_SUFFIX}", __name__)
    bp.add_url_rule(f"/get{noun}Job/", view_func=get_job, methods=["GET"])
    bp.add_url_rule(f"/modify{noun}Job/", view_func=modify_job, methods=["POST"])
    bp.add_url_rule(f"/pause{noun}Job/", view_func=pause_job, methods=["GET"])
    bp.add_url_rule(f"/resume{noun}Job/", view_func=resume_job, methods=["GET"])
    bp.add_url_rule(f"/manual{noun}/", view_func=run_job, methods=["GET"])
    return bp


def _checked(job: str | None) -> JobService:
    service = get_job_service()
    if job is not None and job != service.job.name:
        raise ServiceError("JOB_NOT_FOUND", f"This service has one job: {service.job.name!r}.")
    return service


def install_job(app: Flask, job: JobDefinition, *, run_scheduler: bool) -> JobService:
    """Register the job's routes; run_scheduler says whether this service's scheduler process leads the job.

    Nothing starts here: the scheduler process (``python -m mlstack_core.jobs``, started by the Gunicorn
    master) builds the same app and runs the job when ``job_scheduler_enabled`` is set.
    """
    settings = app.config["MLSTACK_SETTINGS"]
    service = JobService(service=settings.service_name, job=job, mongo=app.extensions["mongo"])
    app.extensions["job_service"] = service
    app.extensions["job_scheduler_enabled"] = run_scheduler
    app.register_blueprint(make_job_blueprint())
    return service
