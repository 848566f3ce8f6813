"""Run records and manual-run requests in MongoDB (``job_runs``), and the context a job function receives.

Every decision that must happen once across replicas is an insert with a unique ``_id`` (FerretDB applies a
conditional update as read-then-write, so two racing updates could both match; a duplicate insert is refused
by both servers):
- a scheduled fire: the run record's ``_id`` is derived from service, job and fire time; the loser skips;
- a manual run: the request inserts a ``queued`` record; a leader executes it only after inserting its claim
  (``job_claims``, ``run:<run_id>``);
- a dead leader's run: the next leader marks it failed after inserting ``abandoned:<run_id>``.
Only the claimer of a run writes it afterwards; every write names the epoch it was claimed under (fencing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

RUNS_COLLECTION = "job_runs"
CLAIMS_COLLECTION = "job_claims"
ACTIVE = frozenset({"queued", "running"})
# The ids this module generates: 32 lowercase hex characters. Anything else names no run.
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
ABANDONED_ERROR = "the process running it stopped (killed, or lost the scheduler lease); the run did not finish"
# Fields a client sees; holder names a host and process, which stays in the database and the logs.
PUBLIC_FIELDS = ("run_id", "job", "status", "trigger", "fire_time", "requested_at", "started_at", "finished_at",
                 "request_id", "epoch", "result", "error")


@dataclass(frozen=True)
class RunContext:
    """What a job function knows about the run it executes."""

    run_id: str
    job: str
    trigger: str  # "schedule" or "manual"
    request_id: str  # the triggering HTTP request's id, else the run id: outbound calls carry it
    epoch: int  # the scheduler lease's fencing epoch the run was claimed under
    fire_time: dt.datetime | None = None  # the schedule's fire time, None for a manual run


def is_run_id(value: str) -> bool:
    """True for a string shaped like the run ids this module generates."""
    return RUN_ID_PATTERN.fullmatch(value) is not None


def fire_run_id(service: str, job: str, fire_time: dt.datetime) -> str:
    """The run id of a scheduled fire: the same on every replica, so the fire runs once."""
    key = f"{service}/{job}/{fire_time.astimezone(dt.UTC).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunRepository:
    """Run records of one service's job."""

    def __init__(self, db: Database, *, service: str, job: str) -> None:
        self._runs = db[RUNS_COLLECTION]
        self._claims = db[CLAIMS_COLLECTION]
        self.service = service
        self.job = job

    def get(self, run_id: str) -> dict[str, Any] | None:
        """A run record by id, None for an id this module could not have generated or an unknown run."""
        if not is_run_id(run_id):
            return None
        return self._runs.find_one({"_id": run_id, "job": self.job})

    def request(self, request_id: str | None) -> dict[str, Any]:
        """Store a manual run request (status 'queued'); a leader claims it within a second."""
        run_id = uuid.uuid4().hex
        record = {"_id": run_id, "run_id": run_id, "service": self.service, "job": self.job, "status": "queued",
                  "trigger": "manual", "requested_at": _now(), "request_id": request_id}
        self._runs.insert_one(record)
        return record

    def fire(self, fire_time: dt.datetime, *, holder: str, epoch: int) -> dict[str, Any] | None:
        """Record a scheduled fire as running; None when another leader already ran (or runs) this fire."""
        run_id = fire_run_id(self.service, self.job, fire_time)
        now = _now()
        record = {"_id": run_id, "run_id": run_id, "service": self.service, "job": self.job, "status": "running",
                  "trigger": "schedule", "fire_time": fire_time, "requested_at": now, "started_at": now,
                  "request_id": None, "holder": holder, "epoch": epoch}
        try:
            self._runs.insert_one(record)
        except DuplicateKeyError:
            return None
        return record

    def claim_queued(self, *, holder: str, epoch: int, limit: int = 20) -> dict[str, Any] | None:
        """Claim the oldest queued manual run and mark it running; None when there is none left to claim."""
        for record in self._runs.find({"job": self.job, "status": "queued"}).sort("requested_at", 1).limit(limit):
            try:
                self._claims.insert_one({"_id": f"run:{record['_id']}", "holder": holder, "epoch": epoch,
                                         "at": _now()})
            except DuplicateKeyError:
                continue  # claimed by another leader (it is marking it running), or by one that died meanwhile
            started = {"status": "running", "started_at": _now(), "holder": holder, "epoch": epoch}
            if self._runs.update_one({"_id": record["_id"], "status": "queued"}, {"$set": started}).matched_count:
                return {**record, **started}
        return None
        return None

    def finish(self, record: dict[str, Any], *, result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
        """Mark a run succeeded (with its summary) or failed (with its public error text)."""
        outcome = {"status": "failed" if error else "succeeded", "finished_at": _now(), "result": result,
                   "error": error}
        # Fenced: a run a newer leader already declared abandoned stays failed.
        self._runs.update_one({"_id": record["_id"], "status": "running", "epoch": record["epoch"]},
                              {"$set": outcome})
        return {**record, **outcome}

    def abandoned(self, epoch: int) -> list[dict[str, Any]]:
        """Runs left running, or claimed but never started, by a leader of an older epoch."""
        running = list(self._runs.find({"job": self.job, "status": "running", "epoch": {"$lt": epoch}}))
        # A leader that died between inserting its claim and marking the record running left it queued.
        queued = list(self._runs.find({"job": self.job, "status": "queued"}))
        if queued:
            claims = {c["_id"]: c for c in self._claims.find({"_id": {"$in": [f"run:{r['_id']}" for r in queued]}})}
            running += [r for r in queued if claims.get(f"run:{r['_id']}", {}).get("epoch", epoch) < epoch]
        return running

    def mark_abandoned(self, record: dict[str, Any], *, epoch: int) -> bool:
        """Mark a dead leader's run failed; True for the one caller, across replicas, that marked it first."""
        try:
            self._claims.insert_one({"_id": f"abandoned:{record['_id']}", "epoch": epoch, "at": _now()})
            first = True
        except DuplicateKeyError:
            first = False  # marked before; marked again in case a late write of the old leader reopened it
        self._runs.update_one(
            {"_id": record["_id"], "status": {"$in": sorted(ACTIVE)}},
            {"$set": {"status": "failed", "finished_at": _now(), "error": ABANDONED_ERROR, "abandoned_by": epoch}},
        )
        return first



def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run record as a client sees it: dates as ISO strings, no host or process names."""
    out = {}
    for key in PUBLIC_FIELDS:
        value = record.get(key)
        if isinstance(value, dt.datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
        out[key] = value
    return out
