"""The scheduler: a leader loop that runs one service's job once across every replica.

Runs in the scheduler process (``python -m mlstack_core.jobs "etl.app:create_app()"``, started by the
Gunicorn master, see mlstack_core.gunicorn_scheduler), never in a request worker. Every TICK_SECONDS it:
1. takes or renews the job's leader lease (``scheduler:<service>:<job>``, TTL LEASE_TTL_SECONDS); without it,
   it does nothing else;
2. marks runs left running by a leader of an older epoch failed (and calls the job's on_abandoned hook);
3. fires the schedule: the newest fire time since the last one handled becomes a run record whose _id is
   derived from the fire time, so a fire runs once whichever leader inserts it first (missed fires within
   MISFIRE_GRACE_SECONDS coalesce into one; a fire while the previous run is still running is skipped);
4. when idle, claims the oldest queued manual run.
Bound: a leader that dies stops renewing; its lease expires LEASE_TTL_SECONDS after the last renewal and the
next tick of another replica takes over and fails its runs: within LEASE_TTL_SECONDS + TICK_SECONDS (16 s).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import requests
from pymongo.errors import PyMongoError

from mlstack_core import metrics, tracing
from mlstack_core.jobs.runs import RunContext, RunRepository
from mlstack_core.jobs.schedule import aware, latest_fire, next_fire, spec_from_doc
from mlstack_core.jobs.service import JobService
from mlstack_core.locks import MongoLease, holder_id

logger = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 15.0
TICK_SECONDS = 1.0
MISFIRE_GRACE_SECONDS = 60.0
STOPPED_ERROR = "the service stopped before the run finished"


def public_error(exc: BaseException) -> str:
    """A run's error as clients see it: what failed, never hosts, ports or exception text (those go to the log)."""
    message = getattr(exc, "public_message", None)
    if isinstance(message, str) and message:
        return message
    if isinstance(exc, PyMongoError):
        return "MongoDB unavailable"
    if isinstance(exc, requests.RequestException):
        return "a service the run calls was unavailable"
    return f"internal error ({type(exc).__name__}); see the service log for this run id"


class JobRunner:
    """The leader's side of one job: lease, recovery, schedule and manual runs, one run at a time."""

    def __init__(self, jobs: JobService, *, lease_ttl: float = LEASE_TTL_SECONDS, tick: float = TICK_SECONDS,
                 holder: str | None = None) -> None:
        self.jobs = jobs
        self.lease_ttl = lease_ttl
        self.tick_seconds = tick
        self.holder = holder or holder_id()
        self._lease: MongoLease | None = None
        self._stop = threading.Event()
        self._current: dict[str, Any] | None = None
        self._executor: threading.Thread | None = None
        self._cursor: dt.datetime | None = None  # fires up to here are handled (run, skipped or not ours)
        self._started_hook = False
        self._noted_next: dt.datetime | None = None

    @property
    def lease_name(self) -> str:
        """The leader lease's name in the ``locks`` collection."""
        return f"scheduler:{self.jobs.service}:{self.jobs.job.name}"

    @property
    def epoch(self) -> int | None:
        """The fencing epoch while this runner leads, else None."""
        return self._lease.epoch if self._lease is not None else None

    def run_forever(self, keep_going=lambda: True) -> None:
        """Tick until stop() is called or keep_going() turns false."""
        logger.info("scheduler for %s/%s started in pid %s (holder %s)", self.jobs.service, self.jobs.job.name,
                    os.getpid(), self.holder)
        while not self._stop.is_set() and keep_going():
            try:
                self.tick()
            except Exception:
                logger.exception("scheduler tick failed")
            self._stop.wait(self.tick_seconds)

    def stop(self, timeout: float = 25.0) -> None:
        """Stop ticking, give a running run `timeout` seconds, then fail it and release the lease."""
        self._stop.set()
        if self._executor is not None:
            self._executor.join(timeout)
        try:
            current = self._current
            if current is not None:
                logger.warning("run %s still running at shutdown; marked failed", current["_id"])
                self.jobs.runs().finish(current, result=None, error=STOPPED_ERROR)
            if self._lease is not None:
                self._lease.release()  # the next replica takes over at its next tick, not after the TTL
        except PyMongoError as exc:
            logger.warning("scheduler shutdown could not reach MongoDB (%s); the lease expires on its own", exc)

    # ------------------------------------------------------------------ one tick

    def tick(self) -> None:
        """One pass of the leader loop (see the module docstring)."""
        if not self._hold_lease():
            return
        epoch = self._lease.epoch
        runs = self.jobs.runs()
        self._recover(runs, epoch)
        if not self._started_hook:
            self._started_hook = True
            self._leader_start_hook()
        self._fire_schedule(runs, epoch)
        if self._idle():
            record = runs.claim_queued(holder=self.holder, epoch=epoch)
            if record is not None:
                self._start(record, epoch)

    def _hold_lease(self) -> bool:
        try:
            if self._lease is None:
                self._lease = MongoLease(self.jobs.mongo.db(), self.lease_name, ttl_seconds=self.lease_ttl,
                                         holder=self.holder)
            was = self._lease.epoch
            held = self._lease.acquire()
        except PyMongoError as exc:
            logger.debug("scheduler lease not renewed (MongoDB unavailable): %s", exc)
            return False
        if held and was != self._lease.epoch:
            logger.info("pid %s leads job %s/%s at epoch %s", os.getpid(), self.jobs.service, self.jobs.job.name,
                        self._lease.epoch)
            # Fires of the last grace period nobody ran are run once (coalesced); older ones are gone.
            self._cursor = _now() - dt.timedelta(seconds=MISFIRE_GRACE_SECONDS)
        return held

    def _recover(self, runs: RunRepository, epoch: int) -> None:
        for record in runs.abandoned(epoch):
            if self._current is not None and record["_id"] == self._current["_id"]:
                continue  # our own run from before we lost and retook the lease: it is still executing here
            if not runs.mark_abandoned(record, epoch=epoch):
                continue
            logger.warning("run %s of %s (epoch %s, holder %s) was left %s by a leader that stopped; marked failed",
                           record["_id"], record["job"], record.get("epoch"), record.get("holder"), record["status"])
            metrics.record_job_run(self.jobs.service, self.jobs.job.name, duration=0.0, ok=False)
            hook = self.jobs.job.on_abandoned
            if hook is not None:
                # Own thread: the hook may call slow services, and the lease must keep being renewed.
                threading.Thread(target=self._call_hook, args=(hook, record), name="on-abandoned",
                                 daemon=True).start()

    @staticmethod
    def _call_hook(hook, record: dict[str, Any]) -> None:
        try:
            hook(record)
        except Exception:
            logger.exception("on_abandoned hook failed for run %s", record["_id"])

    def _leader_start_hook(self) -> None:
        hook = self.jobs.job.on_leader_start
        if hook is None:
            return

        def call() -> None:
            try:
                hook(self.jobs)
            except Exception:
                logger.exception("on_leader_start hook of job %s failed", self.jobs.job.name)

        threading.Thread(target=call, name="leader-start", daemon=True).start()

    def _fire_schedule(self, runs: RunRepository, epoch: int) -> None:
        schedule = self.jobs.schedule()
        doc = schedule.ensure()
        spec, anchor, now = spec_from_doc(doc), aware(doc["anchor"]), _now()
        upcoming = None if doc.get("paused") else next_fire(spec, anchor, now=now)
        if upcoming != self._noted_next:
            schedule.note(next_run_time=upcoming)
            self._noted_next = upcoming
        if doc.get("paused"):
            self._cursor = now  # fires while paused are not made up after resume
            return
        fire = latest_fire(spec, anchor, after=self._cursor, now=now)
        if fire is None:
            return
        self._cursor = fire
        if not self._idle():
            logger.warning("fire at %s of %s skipped: the previous run is still running", fire.isoformat(),
                           self.jobs.job.name)
            return
        record = runs.fire(fire, holder=self.holder, epoch=epoch)
        if record is None:
            logger.debug("fire at %s already ran", fire.isoformat())
            return
        self._start(record, epoch)

    # ------------------------------------------------------------------ executing a run

    def _idle(self) -> bool:
        return self._current is None

    def _start(self, record: dict[str, Any], epoch: int) -> None:
        ctx = RunContext(
            run_id=record["_id"], job=record["job"], trigger=record["trigger"],
            request_id=record.get("request_id") or record["_id"], epoch=epoch,
            fire_time=aware(record.get("fire_time")),
        )
        self._current = record
        self._executor = threading.Thread(target=self.execute, args=(record, ctx), name=f"run-{ctx.run_id[:8]}",
                                          daemon=True)
        self._executor.start()

    def execute(self, record: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        """Run the job once for a claimed record, store its outcome and metrics; never raises."""
        job, service = self.jobs.job, self.jobs.service
        logger.info("run %s of %s started (%s, epoch %s)", ctx.run_id, job.name, ctx.trigger, ctx.epoch)
        started = time.perf_counter()
        result: dict[str, Any] | None = None
        error: str | None = None
        # One trace per run (when tracing is on): the job's MongoDB and HTTP calls, and what they reach, join it.
        attributes = {"job": job.name, "run_id": ctx.run_id, "trigger": ctx.trigger, "request_id": ctx.request_id}
        try:
            with tracing.run_span(f"{job.name} run", attributes):
                # Through JSON: the record is stored in MongoDB, which refuses numpy scalars and the like.
                result = json.loads(json.dumps(job.func(ctx), default=str))
        except Exception as exc:
            logger.exception("job %s run %s failed", job.name, ctx.run_id)
            error = public_error(exc)
        metrics.record_job_run(service, job.name, duration=time.perf_counter() - started, ok=error is None)
        final = self._store_outcome(record, result=result, error=error)
        self._current = None
        return final

    def _store_outcome(self, record: dict[str, Any], *, result: dict[str, Any] | None,
                       error: str | None) -> dict[str, Any]:
        # Retried while MongoDB is down (no other run starts meanwhile): a run must not stay "running".
        while True:
            try:
                final = self.jobs.runs().finish(record, result=result, error=error)
                self.jobs.schedule().note(last_run={
                    "run_id": record["_id"], "status": final["status"],
                    "finished_at": final["finished_at"].isoformat(),
                })
                logger.info("run %s of %s %s", record["_id"], record["job"], final["status"])
                return final
            except PyMongoError as exc:
                logger.warning("outcome of run %s not stored yet (MongoDB unavailable: %s); retrying",
                               record["_id"], exc)
                if self._stop.wait(2.0):
                    return {**record, "status": "failed" if error else "succeeded", "result": result, "error": error}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def main(argv: list[str] | None = None) -> int:
    """Entry of the scheduler process: build the app named on the command line and lead its job."""
    from gunicorn.util import import_app

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mlstack_core.jobs 'package.app:create_app()'\n")
        return 2
    parent = os.getppid()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def keep_going() -> bool:
        # The master's death (even SIGKILL) must not leave this process leading on its own.
        return not stop.is_set() and os.getppid() == parent

    app = import_app(args[0])
    jobs: JobService | None = app.extensions.get("job_service")
    if jobs is None or not app.extensions.get("job_scheduler_enabled", False):
        logger.info("scheduler disabled in this service; idle until stopped")
        while keep_going():
            stop.wait(1.0)
        return 0
    runner = JobRunner(jobs)
    runner.run_forever(keep_going)
    runner.stop(grace_seconds() if os.getppid() == parent else 0.0)
    return 0


def grace_seconds() -> float:
    """How long a stopping scheduler lets a running run finish: inside Gunicorn's graceful timeout."""
    return max(float(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30")) - 5.0, 1.0)
