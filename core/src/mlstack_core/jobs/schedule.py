"""Job schedules: the interval and cron specs a client may set, their stored document, and fire times.

Fire times come from APScheduler's triggers (its interval and crontab arithmetic, nothing else of it: there is
no in-memory job store to keep in step with MongoDB). An interval counts from an anchor stored with the
schedule, so every replica computes the same fire times, and a fire's run id can be derived from its time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Annotated, Any, Literal

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from mlstack_core.service_errors import ServiceError

JOBS_COLLECTION = "scheduler_jobs"
MIN_INTERVAL_SECONDS = 5
MAX_INTERVAL_SECONDS = 7 * 24 * 3600


class IntervalSpec(BaseModel):
    """Run every N seconds/minutes/hours (summed), between 5 s and 7 days."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"trigger": "interval", "minutes": 5}]})
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

    def to_trigger(self, anchor: dt.datetime | None = None) -> IntervalTrigger:
        """The APScheduler trigger; its fires are anchor + k * interval (k >= 1)."""
        start = (anchor or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=self.total_seconds())
        return IntervalTrigger(seconds=self.total_seconds(), start_date=start, timezone=dt.UTC)


class CronSpec(BaseModel):
    """Run on a five-field crontab expression (UTC)."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"trigger": "cron", "cron": "*/5 * * * *"}]})
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

    def to_trigger(self, anchor: dt.datetime | None = None) -> CronTrigger:
        """The APScheduler trigger (a crontab needs no anchor: its fire times are the same everywhere)."""
        return CronTrigger.from_crontab(self.cron, timezone=dt.UTC)


class ScheduleUpdate(BaseModel):
    """The body of a modify-job request: a trigger, nothing else."""

    model_config = ConfigDict(extra="forbid")
    schedule: Annotated[IntervalSpec | CronSpec, Field(discriminator="trigger")]


def parse_schedule(body: Any) -> IntervalSpec | CronSpec:
    """Validate a modify-job body; raises ServiceError 422 naming every problem.

    Accepts ``{"trigger": "interval", "minutes": 10}``, ``{"trigger": "cron", "cron": "*/5 * * * *"}``, or the
    same wrapped as ``{"schedule": {...}}``; a body with only seconds/minutes/hours means an interval.
    """
    if not isinstance(body, dict):
        raise ServiceError("INVALID_BODY", "Send a JSON object such as {\"trigger\": \"interval\", \"minutes\": 5}.")
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
        raise ServiceError("INVALID_SCHEDULE",
            "Only an interval (seconds/minutes/hours, 5 s to 7 days) or a 5-field cron expression can be set; "
            "nothing was changed.",
            details=problems,
        ) from None


def spec_from_doc(doc: dict[str, Any]) -> IntervalSpec | CronSpec:
    """The schedule stored in a job document."""
    return ScheduleUpdate.model_validate({"schedule": doc["schedule"]}).schedule


def latest_fire(spec: IntervalSpec | CronSpec, anchor: dt.datetime, *, after: dt.datetime,
                now: dt.datetime) -> dt.datetime | None:
    """The newest fire time in (after, now], or None: fires missed meanwhile coalesce into this one."""
    trigger = spec.to_trigger(anchor)
    tick = dt.timedelta(microseconds=1)
    fire = trigger.get_next_fire_time(None, after + tick)
    if fire is None or fire > now:
        return None
    while (following := trigger.get_next_fire_time(None, fire + tick)) is not None and following <= now:
        fire = following
    return fire


def next_fire(spec: IntervalSpec | CronSpec, anchor: dt.datetime, *, now: dt.datetime) -> dt.datetime | None:
    """The first fire time after now."""
    return spec.to_trigger(anchor).get_next_fire_time(None, now + dt.timedelta(microseconds=1))


class ScheduleRepository:
    """The job document in ``scheduler_jobs``: schedule, anchor, paused, next run and last run."""

    def __init__(self, col: Collection, *, name: str, default: IntervalSpec | CronSpec) -> None:
        self._col = col
        self.name = name
        self.default = default

    def ensure(self) -> dict[str, Any]:
        """The job document, created with the default schedule unless one is stored already."""
        doc = self._col.find_one({"_id": self.name})
        if doc is None:
            now = _now()
            # Racing creators insert the same default; the first insert wins, the others keep it.
            with contextlib.suppress(DuplicateKeyError):
                self._col.insert_one({"_id": self.name, "schedule": self.default.model_dump(), "paused": False,
                                      "anchor": _second(now), "updated_at": now})
            doc = self._col.find_one({"_id": self.name})
        if doc.get("anchor") is None:  # stored by an older version: anchor it at its last change
            doc["anchor"] = doc.get("updated_at") or _now()
        return doc

    def set_schedule(self, spec: IntervalSpec | CronSpec) -> None:
        """Store a new schedule; an interval counts from now."""
        self.ensure()
        now = _now()
        self._col.update_one(
            {"_id": self.name},
            {"$set": {"schedule": spec.model_dump(), "anchor": _second(now), "updated_at": now}},
        )

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the schedule."""
        self.ensure()
        self._col.update_one({"_id": self.name}, {"$set": {"paused": paused, "updated_at": _now()}})

    def note(self, **fields: Any) -> None:
        """Store what the leader reports (next_run_time, last_run) in the job's state document.

        A document of its own: FerretDB applies an update as read-then-write of the whole document, so the
        leader writing into the schedule's document could undo a pause or schedule change made meanwhile.
        """
        with contextlib.suppress(DuplicateKeyError):  # two upserts raced to create it; the next note lands
            self._col.update_one({"_id": f"{self.name}:state"}, {"$set": fields}, upsert=True)

    def state(self) -> dict[str, Any]:
        """What the leader last reported (empty before its first report)."""
        return self._col.find_one({"_id": f"{self.name}:state"}) or {}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A datetime read from MongoDB (naive UTC) as an aware UTC datetime."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _second(value: dt.datetime) -> dt.datetime:
    # Whole seconds: readable fire times, and nothing lost to MongoDB's millisecond dates.
    return value.replace(microsecond=0)
