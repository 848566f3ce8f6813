"""What the job routes call: read and change a job's schedule, request runs, read run records (MongoDB only).

Request workers never run a job: they write the schedule and run requests to MongoDB and read run records
back; the scheduler process (mlstack_core.jobs.runner) executes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlstack_core import metrics
from mlstack_core.jobs.runs import ACTIVE, RunContext, RunRepository
from mlstack_core.jobs.schedule import JOBS_COLLECTION, CronSpec, IntervalSpec, ScheduleRepository, aware
from mlstack_core.mongo import MongoProvider


@dataclass(frozen=True)
class JobDefinition:
    """A job the service runs: its function is code, never something a request names."""

    name: str
    func: Callable[[RunContext], dict[str, Any]]  # returns a JSON-able summary; raising fails the run
    default_schedule: IntervalSpec | CronSpec
    # Called once in the scheduler process, in its own thread, when it becomes leader (e.g. to queue a first run).
    on_leader_start: Callable[[JobService], None] | None = None
    # Called by the leader that finds a run a dead leader left running, after marking it failed (e.g. to
    # close the run's MLflow run); exceptions are logged, the run stays failed.
    on_abandoned: Callable[[dict[str, Any]], None] | None = None


class JobService:
    """One service's job: its schedule document and run records."""

    POLL_SECONDS = 0.2

    def __init__(self, *, service: str, job: JobDefinition, mongo: MongoProvider) -> None:
        self.service = service
        self.job = job
        self.mongo = mongo
        metrics.declare_job(service, job.name)

    def schedule(self) -> ScheduleRepository:
        """The job's schedule document."""
        return ScheduleRepository(self.mongo.db()[JOBS_COLLECTION], name=self.job.name,
                                  default=self.job.default_schedule)

    def runs(self) -> RunRepository:
        """The job's run records."""
        return RunRepository(self.mongo.db(), service=self.service, job=self.job.name)

    def get_job(self) -> dict[str, Any]:
        """The job as stored (schedule, paused, next run time written by the leader, last run)."""
        schedule = self.schedule()
        doc, state = schedule.ensure(), schedule.state()
        paused = doc.get("paused", False)
        next_run = None if paused else aware(state.get("next_run_time"))
        updated = aware(doc.get("updated_at"))
        return {
            "id": doc["_id"],
            "schedule": doc["schedule"],
            "paused": paused,
            "next_run_time": next_run.isoformat() if next_run else None,
            "updated_at": updated.isoformat() if updated else None,
            "last_run": state.get("last_run"),
        }

    def modify(self, spec: IntervalSpec | CronSpec) -> dict[str, Any]:
        """Store a new schedule; the leader follows it within a second."""
        self.schedule().set_schedule(spec)
        return self.get_job()

    def set_paused(self, paused: bool) -> dict[str, Any]:
        """Pause or resume the schedule (manual runs still run while paused)."""
        self.schedule().set_paused(paused)
        return self.get_job()

    def request_run(self, request_id: str | None = None) -> dict[str, Any]:
        """Queue a manual run and return its record (status 'queued'); raises PyMongoError with MongoDB down."""
        return self.runs().request(request_id)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run record, None for a malformed or unknown id."""
        return self.runs().get(run_id)

    def wait_for(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """Poll a run until it finishes or the timeout passes; returns the last record seen."""
        deadline = time.monotonic() + timeout
        record = self.get_run(run_id)
        while record is not None and record["status"] in ACTIVE and time.monotonic() < deadline:
            time.sleep(self.POLL_SECONDS)
            record = self.get_run(run_id)
        return record
