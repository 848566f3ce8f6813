"""Monitoring proven against live data: a real Prometheus scrapes the real apps of the native stack.

The stack (FerretDB, S3, MLflow, serving, ETL and training with two Gunicorn workers each, Nginx) runs the
closed loop: bootstrap training and promotion, ETL runs forwarded to serving, direct predictions (some with
shifted alcohol: real input drift), a second training run, and injected failures (the ETL's scheduler process
killed during a run, which its successor fails; serving data reads while MongoDB is stopped). Debian's
Prometheus, started here on a free loopback port with the native config template (1 s scrape and evaluation
interval) and the repository's rule files, scrapes the apps' Gunicorn ports. Then:

- every expression of every dashboard panel, and every recording rule, returns at least one series;
- every rule evaluates without error, drift and live MAE reflect the data, all workers serve one version;
- /metrics stays bounded under 2,000 requests to random unknown paths (real Gunicorn, several methods);
- after stopping the ETL service the TargetDown alert fires.

The rules are loaded from a copy whose every ``for`` is 0s, so an alert fires within a scrape instead of
after its production duration; everything else is the production rules (their ``for`` durations are
covered by the promtool unit tests in monitoring/prometheus/unit-tests).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack.faults import paused, request_run, scheduler_leader_pid, wait_run
from devstack.polling import run_job_to_end, wait_until
from devstack.servers import Prometheus
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
DASHBOARD_DIR = REPO / "monitoring" / "grafana" / "provisioning" / "dashboards" / "mlstack"
TIMEOUT = 15
SCRAPE_INTERVAL = "1s"
# What Grafana's $__rate_interval becomes here: long enough to hold the whole closed loop.
RATE_WINDOW = "2m"
RANDOM_PATH_REQUESTS = 2000
METRICS_SIZE_LIMIT = 64 * 1024


# ----------------------------------------------------------------------------------------------- Prometheus


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """The whole native stack; schedules far apart so only this test's runs happen."""
    started = time.monotonic()
    stack = native_stack_factory(
        extra_env={
            "SEED_ROWS": "200",
            "MIN_TRAINING_ROWS": "50",
            "ETL_BATCH_SIZE": "40",
            "ETL_INTERVAL_SECONDS": "3600",
            "TRAINING_INTERVAL_SECONDS": "3600",
            "MONITOR_INTERVAL_SECONDS": "1",
            "DRIFT_MIN_ROWS": "50",
        }
    )
    print(f"stack started in {time.monotonic() - started:.1f}s")
    return stack


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    """A real Prometheus scraping the three apps' Gunicorn ports every second, rules loaded."""
    targets = {name: f"{app.host}:{app.port}" for name, app in stack.apps.items()}
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), targets=targets, scrape_interval=SCRAPE_INTERVAL,
                        alerts_for_zero=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_token}"}


def run_job(stack, admin, service: str, wait: int) -> dict[str, Any]:
    return run_job_to_end(stack.urls[service], service, headers=admin, timeout=wait)[1]


def operator_reads(stack) -> None:
    """What a person or a dashboard link reads from each service (status and data endpoints)."""
    for service, paths in {"serving": ["/model", "/data/count"], "etl": ["/jobs/etl"],
                           "training": ["/model", "/promotions?n=5", "/jobs/training"]}.items():
        for path in paths:
            response = requests.get(f"{stack.urls[service]}{path}", timeout=TIMEOUT)
            assert response.status_code == 200, (service, path, response.text)


def rows_of(frame) -> list[dict[str, float]]:
    return [{name: float(row[name]) for name in FEATURES} for _, row in frame.iterrows()]


@pytest.fixture(scope="module")
def closed_loop(stack, prometheus, admin) -> dict[str, Any]:
    """Drive the pipeline through its normal path and one injected failure; returns what happened."""
    started = time.monotonic()
    serving = stack.urls["serving"]
    wait_until(lambda: (requests.get(f"{serving}/model", timeout=TIMEOUT).json().get("model") or {}).get("version"),
               90, "serving to load the champion of the bootstrap training run")
    operator_reads(stack)

    for _ in range(3):
        assert run_job(stack, admin, "etl", 30)["status"] == "succeeded"

    # Direct predictions: in-distribution rows, then rows with alcohol shifted up (input drift).
    normal = rows_of(generate_frame(60, seed=11))
    shifted = generate_frame(150, seed=12)
    shifted["alcohol"] = (shifted["alcohol"] + 4.0).clip(upper=24.9)
    for rows in (normal, rows_of(shifted)):
        response = requests.post(f"{serving}/predict", json={"rows": rows}, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
    response = requests.post(f"{serving}/predictDummy/", json=normal[0], timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    response = requests.post(f"{serving}/predict", json={"rows": [{"alcohol": "strong"}]}, timeout=TIMEOUT)
    assert 400 <= response.status_code < 500

    training = run_job(stack, admin, "training", 90)
    assert training["status"] == "succeeded", training
    assert run_job(stack, admin, "etl", 30)["status"] == "succeeded"

    # The injected failures. The ETL's scheduler process killed (SIGKILL) during a run, held in its forward to a
    # frozen serving: its restarted successor takes the lease over and fails the run.
    with paused(stack.apps["serving"], 0):
        run_id = request_run(stack, "etl")
        wait_run(stack, "etl", run_id, statuses={"running"}, timeout=30)
        os.kill(scheduler_leader_pid(stack, "etl"), signal.SIGKILL)
    failed = wait_run(stack, "etl", run_id, timeout=90)
    assert failed["status"] == "failed", failed
    # MongoDB stopped during a data read.
    stack.ferretdb.stop()
    try:
        response = requests.get(f"{serving}/data/count", timeout=TIMEOUT)
        assert response.status_code >= 500
    finally:
        stack.ferretdb.start()
    assert run_job(stack, admin, "etl", 30)["status"] == "succeeded"
    operator_reads(stack)

    # Prometheus has seen the failure and the quality monitor has measured drift.
    wait_until(lambda: prometheus.query('job_runs_total{service="etl", outcome="failure"} > 0'), 20,
               "Prometheus to scrape the failed ETL run")
    wait_until(lambda: prometheus.query('serving_feature_drift_psi{feature="alcohol"} > 0.25'), 30,
               "the quality monitor to report the alcohol drift")
    print(f"closed loop done in {time.monotonic() - started:.1f}s")
    return {"training": training}


# ----------------------------------------------------------------------------------------------- helpers


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every panel target of every provisioned dashboard."""
    found = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((board["title"], panel["title"], target["expr"]))
    return found


def recording_rules() -> list[tuple[str, str]]:
    """(record, expr) of every recording rule in the repository."""
    found = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [(rule["record"], rule["expr"]) for rule in group["rules"] if "record" in rule]
    return found


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's interval variables by a fixed window, as Grafana does before querying."""
    return expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", RATE_WINDOW)


def empty_after_polling(prometheus: Prometheus, exprs: dict[str, str], timeout: float) -> dict[str, str]:
    """Query each expression until it returns a series or the shared deadline passes; return the empty ones."""
    deadline = time.monotonic() + timeout
    pending = dict(exprs)
    while pending:
        pending = {name: expr for name, expr in pending.items() if not prometheus.query(expr)}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(1)
    return pending


# ----------------------------------------------------------------------------------------------- tests


def test_prometheus_scrapes_every_app(prometheus, closed_loop):
    up = prometheus.values("up")
    jobs = {json.loads(key)["job"]: value for key, value in up.items()}
    assert jobs == {"serving": 1.0, "etl": 1.0, "training": 1.0, "prometheus": 1.0}


def test_every_rule_is_loaded_and_evaluates_cleanly(prometheus, closed_loop):
    loaded = prometheus.rules()
    names = {rule["name"] for rule in loaded}
    expected = {record for record, _ in recording_rules()}
    for path in (PROMETHEUS_DIR / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            expected |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    assert names == expected
    unhealthy = {rule["name"]: rule.get("lastError") for rule in loaded if rule.get("health") != "ok"}
    assert not unhealthy, unhealthy


def test_every_dashboard_panel_returns_data(prometheus, closed_loop):
    targets = dashboard_targets()
    assert len(targets) >= 30
    exprs = {f"{board} / {title} / {expr}": grafana_to_promql(expr) for board, title, expr in targets}
    empty = empty_after_polling(prometheus, exprs, timeout=20)
    assert not empty, "panels showing no data:\n" + "\n".join(empty)


def test_every_recording_rule_returns_data(prometheus, closed_loop):
    rules = recording_rules()
    assert len(rules) >= 11
    # The expression itself, and the series the rule recorded (proof the loaded rule produced it).
    exprs = {f"{record} (expr)": expr for record, expr in rules} | {record: record for record, _ in rules}
    empty = empty_after_polling(prometheus, exprs, timeout=20)
    assert not empty, "recording rules without data:\n" + "\n".join(empty)


def test_workers_report_their_model_version(prometheus, closed_loop):
    def agreed():
        versions = prometheus.values('serving_model_version{job="serving"}')
        return versions if len(versions) == 2 and len(set(versions.values())) == 1 else None

    versions = wait_until(agreed, 20, "both serving workers to report the same model version")
    assert all("pid" in json.loads(key) for key in versions)
    assert min(versions.values()) >= 1
    ages = prometheus.values("time() - serving_model_loaded_timestamp_seconds")
    assert len(ages) == 2 and all(0 <= age < 600 for age in ages.values())


def test_drift_and_live_mae_reflect_the_data(prometheus, closed_loop):
    psi = {json.loads(k)["feature"]: v for k, v in prometheus.values("serving_feature_drift_psi").items()}
    assert set(psi) == set(FEATURES)
    # Only alcohol was shifted: it drifts most, clearly above the alert threshold.
    assert max(psi, key=psi.get) == "alcohol" and psi["alcohol"] > 0.25, psi
    ks = {json.loads(k)["feature"]: v for k, v in prometheus.values("serving_feature_drift_ks").items()}
    assert max(ks, key=ks.get) == "alcohol" and 0 < ks["alcohol"] <= 1, ks
    live_mae = list(prometheus.values("serving_live_mae").values())
    rows = list(prometheus.values("serving_live_mae_rows").values())
    assert len(live_mae) == 1 and 0 < live_mae[0] < 2, live_mae
    assert rows and rows[0] >= 160  # five successful ETL runs of 40 rows with known quality
    promotions = prometheus.values("sum by (outcome) (training_promotions_total)")
    assert sum(promotions.values()) >= 2  # bootstrap promotion and the manual run's decision
    failures = prometheus.values('request_etl_process_error{app_name="etl"}')
    assert list(failures.values()) and next(iter(failures.values())) > 0  # the injected failure, legacy name


def test_alerts_of_the_injected_failure_and_drift_fire(prometheus, closed_loop):
    def firing(alertname: str, **labels: str):
        matchers = "".join(f', {k}="{v}"' for k, v in labels.items())
        return prometheus.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"{matchers}}}')

    wait_until(lambda: firing("JobRunsFailing", service="etl"), 15, "JobRunsFailing for the ETL")
    wait_until(lambda: firing("FeatureDriftHigh", feature="alcohol"), 15, "FeatureDriftHigh for alcohol")
    assert not firing("TargetDown")
    assert not firing("NoChampionLoaded")


def test_metrics_size_is_bounded_under_random_unknown_paths(stack, closed_loop):
    """2,000 requests to random paths with assorted methods, straight to serving's Gunicorn (two workers)."""
    base = stack.apps["serving"].url
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "BREW", "PROPFIND"]

    def hit(i: int) -> int:
        path = f"/scan-{uuid.uuid4().hex}/{i}?q={uuid.uuid4().hex[:6]}"
        return requests.request(methods[i % len(methods)], base + path, timeout=TIMEOUT).status_code

    def series_of(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    def send(n: int, offset: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(hit, range(offset, offset + n)))
        assert set(statuses) <= {400, 404, 405}, set(statuses)

    started = time.monotonic()
    send(RANDOM_PATH_REQUESTS // 2, 0)
    first = requests.get(f"{base}/metrics", timeout=TIMEOUT).text
    send(RANDOM_PATH_REQUESTS // 2, RANDOM_PATH_REQUESTS // 2)
    second = requests.get(f"{base}/metrics", timeout=TIMEOUT).text
    print(f"{RANDOM_PATH_REQUESTS} random-path requests in {time.monotonic() - started:.1f}s; "
          f"/metrics {len(first)} -> {len(second)} bytes")

    assert "scan-" not in second
    # The second 1,000 paths added no series at all: every unknown path and method shares a fixed label.
    assert series_of(second) == series_of(first)
    assert len(second) < METRICS_SIZE_LIMIT
    unmatched = [s for s in series_of(second) if s.startswith("http_requests_total{") and "<unmatched>" in s]
    assert unmatched and all(re.search(r'method="(GET|POST|PUT|DELETE|PATCH|OTHER)"', s) for s in unmatched)
    assert any('method="OTHER"' in s for s in unmatched)


def test_target_down_alert_fires_when_a_service_stops(stack, prometheus, closed_loop):
    """Last test of the module: stops the ETL service."""
    stack.stop_app("etl")
    started = time.monotonic()
    wait_until(
        lambda: prometheus.query('ALERTS{alertname="TargetDown", alertstate="firing", job="etl"}'),
        20, "TargetDown to fire for the stopped ETL service",
    )
    print(f"TargetDown firing {time.monotonic() - started:.1f}s after stopping ETL")
    assert not prometheus.query('ALERTS{alertname="TargetDown", job="serving"}')
