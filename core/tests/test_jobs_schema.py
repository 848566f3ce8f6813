"""Job schedule changes accept an interval or a cron expression and nothing else."""

import pytest

from mlstack_core.errors import ApiError
from mlstack_core.jobs import CronSpec, IntervalSpec, parse_schedule


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
    with pytest.raises(ApiError) as info:
        parse_schedule(body)
    assert info.value.status in {400, 422}
