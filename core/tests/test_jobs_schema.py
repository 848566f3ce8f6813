"""Job schedule changes accept an interval or a cron expression and nothing else; fire times are deterministic."""

import datetime as dt

import pytest

from mlstack_core.errors import http_status
from mlstack_core.jobs import CronSpec, IntervalSpec, parse_schedule
from mlstack_core.jobs.schedule import latest_fire, next_fire
from mlstack_core.service_errors import ServiceError


@pytest.mark.parametrize(
    ("body", "seconds"),
    [
        ({"trigger": "interval", "minutes": 10}, 600),
        ({"minutes": 1, "seconds": 30}, 90),
        ({"schedule": {"trigger": "interval", "hours": 2}}, 7200),
        ({"seconds": 5}, 5),
    ],
)
def test_intervals(body, seconds):
    spec = parse_schedule(body)
    assert isinstance(spec, IntervalSpec)
    assert spec.total_seconds() == seconds


def test_cron():
    spec = parse_schedule({"trigger": "cron", "cron": "*/5 * * * *"})
    assert isinstance(spec, CronSpec)
    assert spec.to_trigger() is not None


@pytest.mark.parametrize(
    "body",
    [
        {"func": "os:system", "args": ["touch /tmp/x"]},
        {"trigger": "interval", "minutes": 5, "func": "os:system"},
        {"trigger": "date", "run_date": "2030-01-01"},
        {"trigger": "interval", "seconds": 1},
        {"trigger": "interval", "days": 30},
        {"trigger": "interval", "minutes": -5},
        {"trigger": "interval", "hours": 24 * 8},
        {"trigger": "cron", "cron": "* * *"},
        {"trigger": "cron", "cron": "99 * * * *"},
        {"trigger": "cron", "cron": "*/5 * * * *", "id": "other"},
        {"trigger": "interval"},
        ["minutes", 5],
    ],
)
def test_everything_else_is_rejected(body):
    with pytest.raises(ServiceError) as info:
        parse_schedule(body)
    assert http_status(info.value) in {400, 422}


ANCHOR = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_interval_fires_count_from_the_anchor_on_every_replica():
    spec = IntervalSpec(seconds=5)
    now = ANCHOR + dt.timedelta(seconds=12.3)
    assert next_fire(spec, ANCHOR, now=now) == ANCHOR + dt.timedelta(seconds=15)
    assert next_fire(spec, ANCHOR, now=ANCHOR + dt.timedelta(seconds=15)) == ANCHOR + dt.timedelta(seconds=20)
    seconds = dt.timedelta(seconds=1)
    assert latest_fire(spec, ANCHOR, after=ANCHOR, now=now) == ANCHOR + 10 * seconds  # 5 s and 10 s coalesce
    assert latest_fire(spec, ANCHOR, after=ANCHOR + 10 * seconds, now=now) is None  # handled already
    assert latest_fire(spec, ANCHOR, after=ANCHOR - 60 * seconds, now=ANCHOR + 4 * seconds) is None


def test_cron_fires_need_no_anchor():
    spec = parse_schedule({"trigger": "cron", "cron": "*/5 * * * *"})
    now = ANCHOR + dt.timedelta(minutes=7)
    assert next_fire(spec, ANCHOR, now=now) == ANCHOR + dt.timedelta(minutes=10)
    old_anchor = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert latest_fire(spec, old_anchor, after=ANCHOR, now=now) == ANCHOR + dt.timedelta(minutes=5)
