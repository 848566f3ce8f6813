"""Scheduled jobs that run exactly once per service, however many Gunicorn workers serve HTTP.

How:
- Every worker starts a :class:`LeaderElector` thread; the one that holds an ``flock`` on a file in
  ``STATE_DIR`` runs the APScheduler 3 scheduler. When that worker dies the kernel drops the lock and another
  worker takes over within a couple of seconds.
- The job's schedule (trigger, paused) lives in MongoDB (collection ``scheduler_jobs``): any worker's API
  writes it, the leader polls it every second and applies it, so changes are seen by every worker and
  survive restarts. Nothing from a request ever reaches APScheduler but a validated trigger: jobs are
  functions registered in code, never callables named by a client.
- Manual runs are queued as files in ``STATE_DIR/queue`` (shared by the workers of one service instance,
  and usable while MongoDB is down); the leader picks them up within a second. Run records are kept in
  ``STATE_DIR/runs`` and mirrored best-effort into MongoDB ``job_runs``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pymongo.errors import PyMongoError

from mlstack_core import metrics
from mlstack_core.errors import ApiError
from mlstack_core.mongo import MongoProvider

logger = logging.getLogger(__name__)

JOBS_COLLECTION = "scheduler_jobs"
RUNS_COLLECTION = "job_runs"
MIN_INTERVAL_SECONDS = 5
MAX_INTERVAL_SECONDS = 7 * 24 * 3600


# --------------------------------------------------------------------------- schedule schema


class IntervalSpec(BaseModel):
    """Run every N seconds/minutes/hours (summed), between 5 s and 7 days."""

    model_config = ConfigDict(extra="forbid")
    trigger: Literal["interval"] = "interval"
    seconds: int = Field(0, ge=0)
    minutes: int = Field(0, ge=0)
    hours: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> IntervalSpec:
        total = self.total_seconds()
        if not MIN_INTERVAL_SECONDS <= total <= MAX_INTERVAL_SECONDS:
            raise ValueError(
                f"interval must be between {MIN_INTERVAL_SECONDS} seconds and {MAX_INTERVAL_SECONDS // 86400} "
                f"days in total (got {total} s)"
            )
        return self

    def total_seconds(self) -> int:
        """The interval in seconds."""
        return self.seconds + 60 * self.minutes + 3600 * self.hours

    def to_trigger(self) -> IntervalTrigger:
        """The APScheduler trigger."""
        return IntervalTrigger(seconds=self.total_seconds(), timezone=dt.UTC)


class CronSpec(BaseModel):
    """Run on a five-field crontab expression (UTC)."""

    model_config = ConfigDict(extra="forbid")
    trigger: Literal["cron"]
    cron: str = Field(min_length=9, max_length=100)

    @field_validator("cron")
    @classmethod
    def _parses(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("cron must have 5 fields: minute hour day month day_of_week")
        try:
            CronTrigger.from_crontab(value, timezone=dt.UTC)
        except ValueError as exc:
            raise ValueError(f"invalid cron expression: {exc}") from None
        return value

    def to_trigger(self) -> CronTrigger:
        """The APScheduler trigger."""
        return CronTrigger.from_crontab(self.cron, timezone=dt.UTC)


class ScheduleUpdate(BaseModel):
    """The body of a modify-job request: a trigger, nothing else."""

    model_config = ConfigDict(extra="forbid")
    schedule: Annotated[IntervalSpec | CronSpec, Field(discriminator="trigger")]


def parse_schedule(body: Any) -> IntervalSpec | CronSpec:
    """Validate a modify-job body; raises ApiError 422 naming every problem.

    Accepts ``{"trigger": "interval", "minutes": 10}``, ``{"trigger": "cron", "cron": "*/5 * * * *"}``, or the
    same wrapped as ``{"schedule": {...}}``; a body with only seconds/minutes/hours means an interval.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_BODY", "Send a JSON object such as {\"trigger\": \"interval\", \"minutes\": 5}.")
    inner = body.get("schedule", body) if set(body) == {"schedule"} else body
    if isinstance(inner, dict) and "trigger" not in inner:
        inner = {"trigger": "interval", **inner}
    try:
        return ScheduleUpdate.model_validate({"schedule": inner}).schedule
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][2:]) or "trigger", "message": err["msg"]}
            for err in exc.errors()
        ]
        raise ApiError(
            422,
            "INVALID_SCHEDULE",
            "Only an interval (seconds/minutes/hours, 5 s to 7 days) or a 5-field cron expression can be set; "
            "nothing was changed.",
            details=problems,
        ) from None


def spec_from_doc(doc: dict[str, Any]) -> IntervalSpec | CronSpec:
    """The schedule stored in a job document."""
    return ScheduleUpdate.model_validate({"schedule": doc["schedule"]}).schedule


# --------------------------------------------------------------------------- job definitions and runs


@dataclass(frozen=True)
class JobDefinition:
    """A job the service runs: its function is code, never something a request names."""

    name: str
    func: Callable[[str], dict[str, Any]]  # called with the run id, returns a JSON-able summary
    default_schedule: IntervalSpec | CronSpec
    # Called once in the leader, in its own thread, after the scheduler started (e.g. to queue a first run).
    on_leader_start: Callable[[JobService], None] | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunStore:
    """Run records as JSON files in STATE_DIR (primary, works without MongoDB), mirrored into MongoDB."""

    def __init__(self, state_dir: Path, mongo: MongoProvider | None) -> None:
        self._dir = state_dir / "runs"
        self._queue = state_dir / "queue"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._queue.mkdir(parents=True, exist_ok=True)
        self._mongo = mongo

    def _write(self, record: dict[str, Any]) -> None:
        path = self._dir / f"{record['run_id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader never sees half a record
        if self._mongo is not None:
            try:
                self._mongo.db()[RUNS_COLLECTION].replace_one(
                    {"_id": record["run_id"]}, {**record, "_id": record["run_id"]}, upsert=True
                )
            except PyMongoError as exc:
                logger.warning("run %s not mirrored to MongoDB: %s", record["run_id"], exc)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """A run record by id (local file first, then MongoDB for runs of other replicas)."""
        if not run_id.replace("-", "").isalnum():
            return None
        path = self._dir / f"{run_id}.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        if self._mongo is not None:
            try:
                doc = self._mongo.db()[RUNS_COLLECTION].find_one({"_id": run_id})
            except PyMongoError:
                return None
            if doc:
                doc.pop("_id", None)
                return doc
        return None

    def enqueue(self, job: str, request_id: str | None = None) -> dict[str, Any]:
        """Queue a manual run for the leader and return its record (the HTTP request id travels with it)."""
        run_id = uuid.uuid4().hex
        record = {"run_id": run_id, "job": job, "status": "queued", "trigger": "manual",
                  "requested_at": _now().isoformat(), "request_id": request_id}
        self._write(record)
        tmp = self._queue / f".{run_id}.tmp"
        tmp.write_text(json.dumps({"run_id": run_id, "job": job}), encoding="utf-8")
        os.replace(tmp, self._queue / f"{run_id}.json")
        return record

    def take_queued(self) -> list[dict[str, Any]]:
        """Claim every queued run (leader only); a claimed file is removed so it runs once."""
        claimed = []
        for path in sorted(self._queue.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                item = json.loads(path.read_text(encoding="utf-8"))
                path.unlink()
            except (OSError, ValueError):
                continue
            claimed.append(item)
        return claimed

    def start(self, run_id: str, job: str, trigger: str) -> dict[str, Any]:
        """Mark a run as running."""
        record = self.get(run_id) or {"run_id": run_id, "job": job, "trigger": trigger,
                                       "requested_at": _now().isoformat()}
        record.update(status="running", started_at=_now().isoformat())
        self._write(record)
        return record

    def finish(self, record: dict[str, Any], *, result: dict[str, Any] | None, error: str | None) -> None:
        """Mark a run as succeeded or failed, with its summary or error."""
        record.update(
            status="failed" if error else "succeeded",
            finished_at=_now().isoformat(),
            result=result,
            error=error,
        )
        self._write(record)


# --------------------------------------------------------------------------- the scheduler service


class JobService:
    """What routes call: read and change a job's schedule, queue runs, read run records."""

    def __init__(self, *, service: str, job: JobDefinition, mongo: MongoProvider, state_dir: Path) -> None:
        self.service = service
        self.job = job
        self.mongo = mongo
        self.runs = RunStore(state_dir, mongo)
        metrics.declare_job(service, job.name)

    def _col(self):
        return self.mongo.db()[JOBS_COLLECTION]

    def ensure_job(self) -> dict[str, Any]:
        """Create the job document with the default schedule unless one is stored already."""
        self._col().update_one(
            {"_id": self.job.name},
            {"$setOnInsert": {"schedule": self.job.default_schedule.model_dump(), "paused": False,
                              "version": 1, "updated_at": _now()}},
            upsert=True,
        )
        return self._col().find_one({"_id": self.job.name})

    def get_job(self) -> dict[str, Any]:
        """The job as stored (schedule, paused, next run time written by the leader)."""
        doc = self.ensure_job()
        return {
            "id": doc["_id"],
            "schedule": doc["schedule"],
            "paused": doc.get("paused", False),
            "next_run_time": doc.get("next_run_time").isoformat() if doc.get("next_run_time") else None,
            "updated_at": doc["updated_at"].isoformat() if doc.get("updated_at") else None,
            "last_run": doc.get("last_run"),
        }

    def modify(self, spec: IntervalSpec | CronSpec) -> dict[str, Any]:
        """Store a new schedule; the leader applies it within a second."""
        self.ensure_job()
        self._col().update_one(
            {"_id": self.job.name},
            {"$set": {"schedule": spec.model_dump(), "updated_at": _now()}, "$inc": {"version": 1}},
        )
        return self.get_job()

    def set_paused(self, paused: bool) -> dict[str, Any]:
        """Pause or resume the schedule (manual runs still work while paused)."""
        self.ensure_job()
        self._col().update_one(
            {"_id": self.job.name}, {"$set": {"paused": paused, "updated_at": _now()}, "$inc": {"version": 1}}
        )
        return self.get_job()

    def request_run(self, request_id: str | None = None) -> dict[str, Any]:
        """Queue a manual run and return its record (status 'queued')."""
        return self.runs.enqueue(self.job.name, request_id)

    def request_id_of(self, run_id: str) -> str:
        """The request id a run's outbound calls carry: the triggering HTTP request's, else the run id."""
        record = self.runs.get(run_id) or {}
        return record.get("request_id") or run_id

    def wait_for(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """Poll a run until it finishes or the timeout passes; returns the last record seen."""
        deadline = time.monotonic() + timeout
        record = self.runs.get(run_id)
        while record is not None and record["status"] in {"queued", "running"} and time.monotonic() < deadline:
            time.sleep(0.2)
            record = self.runs.get(run_id)
        return record


class JobRunner:
    """The leader's side: applies the stored schedule to APScheduler and executes runs."""

    SYNC_SECONDS = 1.0

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self._scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            executors={"default": {"type": "threadpool", "max_workers": 2}},
        )
        self._applied_version: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()

    def start(self) -> None:
        """Start APScheduler with the default schedule and the sync loop that follows the stored one."""
        name = self.jobs.job.name
        self._scheduler.add_job(
            self._scheduled_run, trigger=self.jobs.job.default_schedule.to_trigger(), id=name, name=name,
            replace_existing=True,
        )
        self._scheduler.start()
        self._thread = threading.Thread(target=self._sync_loop, name=f"{name}-sync", daemon=True)
        self._thread.start()
        logger.info("scheduler started for job %s in pid %s", name, os.getpid())
        if self.jobs.job.on_leader_start is not None:
            threading.Thread(target=self._leader_start_hook, name=f"{name}-leader-start", daemon=True).start()

    def _leader_start_hook(self) -> None:
        try:
            self.jobs.job.on_leader_start(self.jobs)
        except Exception:
            logger.exception("on_leader_start hook of job %s failed", self.jobs.job.name)

    def stop(self) -> None:
        """Stop the sync loop and the scheduler (waits for a running job)."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.SYNC_SECONDS):
            try:
                self.sync_once()
            except Exception:
                logger.exception("scheduler sync failed")

    def sync_once(self) -> None:
        """Apply a changed stored schedule and start queued manual runs."""
        for item in self.jobs.runs.take_queued():
            self._scheduler.add_job(self.execute, args=[item["run_id"], "manual"], id=f"manual-{item['run_id']}")
        try:
            doc = self.jobs.ensure_job()
        except PyMongoError as exc:
            logger.debug("schedule not synced (MongoDB unavailable): %s", exc)
            return
        name = self.jobs.job.name
        if doc.get("version") != self._applied_version:
            self._scheduler.reschedule_job(name, trigger=spec_from_doc(doc).to_trigger())
            if doc.get("paused"):
                self._scheduler.pause_job(name)
            self._applied_version = doc.get("version")
            logger.info("applied schedule %s (paused=%s)", doc["schedule"], doc.get("paused", False))
        job = self._scheduler.get_job(name)
        next_run = job.next_run_time if job else None
        if next_run != doc.get("next_run_time"):
            self.jobs._col().update_one({"_id": name}, {"$set": {"next_run_time": next_run}})

    def _scheduled_run(self) -> None:
        self.execute(uuid.uuid4().hex, "schedule")

    def execute(self, run_id: str, trigger: str) -> dict[str, Any]:
        """Run the job once, recording the run, its metrics and its outcome; never raises."""
        job = self.jobs.job
        service = self.jobs.service
        # One run at a time in this process; cross-replica exclusion is the job's own business (a lease).
        with self._run_lock:
            record = self.jobs.runs.start(run_id, job.name, trigger)
            started = time.perf_counter()
            result: dict[str, Any] | None = None
            error: str | None = None
            try:
                result = job.func(run_id)
            except Exception as exc:
                logger.exception("job %s run %s failed", job.name, run_id)
                error = f"{type(exc).__name__}: {exc}"
            metrics.record_job_run(service, job.name, duration=time.perf_counter() - started, ok=error is None)
            self.jobs.runs.finish(record, result=result, error=error)
            with contextlib.suppress(PyMongoError):  # the run record above already holds the outcome
                self.jobs._col().update_one(
                    {"_id": job.name},
                    {"$set": {"last_run": {"run_id": run_id, "status": record["status"],
                                           "finished_at": record["finished_at"]}}},
                )
            return record


class LeaderElector:
    """Keeps trying to take an exclusive file lock; the holder starts the runner (once per process)."""

    RETRY_SECONDS = 2.0

    def __init__(self, lock_path: Path, on_elected: Callable[[], None]) -> None:
        self._path = lock_path
        self._on_elected = on_elected
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader-elector", daemon=True)

    @property
    def is_leader(self) -> bool:
        """True in the process that holds the lock."""
        return self._fd is not None

    def start(self) -> None:
        """Start competing for leadership in the background."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop competing (the lock goes with the process)."""
        self._stop.set()

    def _try_lock(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._try_lock():
                logger.info("pid %s is the scheduler leader", os.getpid())
                try:
                    self._on_elected()
                except Exception:
                    logger.exception("leader start-up failed")
                return
            self._stop.wait(self.RETRY_SECONDS)
