"""Alerts reach a person: Prometheus -> Alertmanager -> a webhook, end to end on real servers.

The native stack (FerretDB, S3, MLflow, serving, ETL and training behind Nginx); Debian's Prometheus scraping the
three Gunicorn ports every second with the repository's rules, every ``for`` set to 0s; Debian's Alertmanager
with the repository's config (monitoring/alertmanager) rendered for a webhook receiver this test runs, with
group_wait 1 s and group_interval 2 s (routes, grouping, inhibition and receivers as shipped). Serving is stopped
by its pid, then:

- ServiceDown for job serving reaches the webhook through the ``critical`` route, grouped by alert name and job,
  with its severity and a runbook_url naming a section of docs/runbooks.md;
- TargetDown for serving (firing too) and a ServingLatencyP99High alert for serving (posted to Alertmanager's API
  as Prometheus posts alerts: a real p99 above 1 s would take minutes of slow traffic) are inhibited:
  Alertmanager marks them suppressed by ServiceDown, and the webhook never gets them.

Serving is started again, then the resolved ServiceDown notification arrives, and the latency alert, inhibited no
more, is delivered through the ``warning`` route. Every wait has a deadline.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.polling import wait_until
from devstack.servers import Alertmanager, Prometheus
from devstack.webhook import WebhookReceiver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks.md"
# Production timings are 10 s to 1 min of group_wait and minutes of group_interval; a test waits seconds.
TEST_TIMINGS = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}
DOWN_JOB = "serving"
# Bounds (seconds) far above what a run takes here: a scrape and an evaluation every second, a 2 s group interval.
ALERT_TIMEOUT = 30
RESTART_TIMEOUT = 90
# How long an inhibited alert is watched for, i.e. several group intervals in which it would have been sent.
QUIET_SECONDS = 6


def utc(timestamp: str) -> dt.datetime:
    """An RFC 3339 time of Alertmanager's payload (nanoseconds, Z) as an aware datetime."""
    return dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", timestamp).replace("Z", "+00:00"))


def delivered(webhook: WebhookReceiver, alertname: str, *, since: dt.datetime, status: str | None = None
              ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(notification, alert) pairs the webhook got for DOWN_JOB's alertname that started after `since`."""
    found = []
    for notification in webhook.notifications:
        for alert in notification["alerts"]:
            labels = alert["labels"]
            if (labels.get("alertname") == alertname and labels.get("job") == DOWN_JOB
                    and utc(alert["startsAt"]) >= since and (status is None or alert["status"] == status)):
                found.append((notification, alert))
    return found


def runbook_sections() -> set[str]:
    """The anchors of docs/runbooks.md's sections (GitHub style: lower case)."""
    return {f"docs/runbooks.md#{name.lower()}" for name in re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M)}


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """The whole native stack, one worker per service, schedules out of the way."""
    return native_stack_factory(
        workers=1,
        extra_env={"SEED_ROWS": "20", "ETL_INTERVAL_SECONDS": "3600", "TRAINING_INTERVAL_SECONDS": "3600"},
    )


@pytest.fixture(scope="module")
def webhook():
    """The person's end of the pipe: an HTTP server of this test that keeps every notification."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def alertmanager(webhook, tmp_path_factory):
    """Debian's Alertmanager with the shipped config for the test's webhook, notifying within seconds."""
    with Alertmanager(tmp_path_factory.mktemp("alertmanager"), webhook_url=webhook.url, timings=TEST_TIMINGS) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(stack, alertmanager, tmp_path_factory):
    """Debian's Prometheus scraping the apps every second, rules with for: 0s, alerts to the Alertmanager."""
    targets = {name: f"{app.host}:{app.port}" for name, app in stack.apps.items()}
    with Prometheus(tmp_path_factory.mktemp("prometheus"), targets=targets, scrape_interval="1s",
                    alerts_for_zero=True, alertmanagers=[alertmanager.target]) as server:
        yield server


def test_service_down_reaches_the_webhook_inhibits_its_other_alerts_and_resolves(
    stack, webhook, alertmanager, prometheus
):
    started = time.monotonic()

    def alertmanagers() -> list[str]:
        body = requests.get(f"{prometheus.url}/api/v1/alertmanagers", timeout=10).json()
        return [am["url"] for am in body["data"]["activeAlertmanagers"]]

    # Prometheus applies its discovered targets (static ones too) a few seconds after start.
    found = wait_until(alertmanagers, ALERT_TIMEOUT, "Prometheus to know its Alertmanager", interval=0.5)
    assert found == [f"{alertmanager.url}/api/v2/alerts"]

    def all_up_and_quiet() -> bool:
        up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
        firing = prometheus.query('ALERTS{alertname=~"ServiceDown|TargetDown"}')
        return all(up.get(job) == "1" for job in ("serving", "etl", "training")) and not firing

    wait_until(all_up_and_quiet, ALERT_TIMEOUT, "every app scraped and no availability alert", interval=0.5)

    # Stop serving's Gunicorn by the pid the harness started it with (its Nginx keeps running).
    app = stack.apps[DOWN_JOB]
    since = dt.datetime.now(dt.UTC)
    stopped = time.monotonic()
    os.kill(app.pid, signal.SIGTERM)
    wait_until(lambda: not app.running, 40, f"{DOWN_JOB}'s Gunicorn to exit", interval=0.1)
    print(f"serving's Gunicorn exited {time.monotonic() - stopped:.1f}s after SIGTERM")
    app.stop()  # reaps it; ends anything left in its process group

    (notification, alert), *_ = wait_until(
        lambda: delivered(webhook, "ServiceDown", since=since, status="firing"), ALERT_TIMEOUT,
        "the ServiceDown notification for serving at the webhook", interval=0.2)
    print(f"ServiceDown at the webhook {time.monotonic() - stopped:.1f}s after SIGTERM to serving")
    assert notification["receiver"] == "critical" and notification["status"] == "firing"
    assert notification["groupLabels"] == {"alertname": "ServiceDown", "job": DOWN_JOB}
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#servicedown"
    assert alert["annotations"]["runbook_url"] in runbook_sections()
    assert alert["annotations"]["summary"] == "serving: no instance answers /metrics"

    # A latency alert of the down service, as Prometheus would send it.
    now = dt.datetime.now(dt.UTC)
    alertmanager.post_alerts([{
        "labels": {"alertname": "ServingLatencyP99High", "job": DOWN_JOB, "severity": "warning"},
        "annotations": {"summary": "Serving p99 prediction latency is 2s",
                        "runbook_url": "docs/runbooks.md#servinglatencyp99high"},
        "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(minutes=10)).isoformat(),
    }])

    def suppressed() -> dict[str, list[str]] | None:
        states = {a["labels"]["alertname"]: a["status"] for a in alertmanager.alerts()
                  if a["labels"].get("job") == DOWN_JOB}
        wanted = ("TargetDown", "ServingLatencyP99High")
        if not all(name in states and states[name]["state"] == "suppressed" for name in wanted):
            return None
        return {name: states[name]["inhibitedBy"] for name in wanted}

    inhibited_by = wait_until(suppressed, ALERT_TIMEOUT, "TargetDown and the latency alert of serving suppressed",
                              interval=0.2)
    service_down = [a["fingerprint"] for a in alertmanager.alerts() if a["labels"]["alertname"] == "ServiceDown"
                    and a["labels"]["job"] == DOWN_JOB]
    assert all(by == service_down for by in inhibited_by.values()), (inhibited_by, service_down)
    time.sleep(QUIET_SECONDS)  # several group intervals in which they would have been sent
    assert not delivered(webhook, "TargetDown", since=since)
    assert not delivered(webhook, "ServingLatencyP99High", since=since)

    # Serving back on the same port: ServiceDown resolves, the latency alert is no longer inhibited.
    stack.start_app(DOWN_JOB)
    back = time.monotonic()
    (notification, alert), *_ = wait_until(
        lambda: delivered(webhook, "ServiceDown", since=since, status="resolved"), RESTART_TIMEOUT,
        "the resolved ServiceDown notification for serving", interval=0.2)
    print(f"resolved notification {time.monotonic() - back:.1f}s after serving was back")
    assert notification["receiver"] == "critical" and notification["status"] == "resolved"
    assert alert["labels"]["severity"] == "critical" and alert["annotations"]["runbook_url"]
    (notification, alert), *_ = wait_until(
        lambda: delivered(webhook, "ServingLatencyP99High", since=since, status="firing"),
        ALERT_TIMEOUT, "the latency alert, inhibited no more, at the webhook", interval=0.2)
    assert notification["receiver"] == "warning" and alert["labels"]["severity"] == "warning"
    assert not delivered(webhook, "TargetDown", since=since), "TargetDown was inhibited for its whole life"
    print(f"whole alerting scenario {time.monotonic() - started:.1f}s")
