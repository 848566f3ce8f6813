"""Prometheus configuration and rules, offline: promtool checks and unit tests, and what the rules must cover.

The live counterpart (a real Prometheus scraping the real apps) is tests/e2e/test_monitoring_live.py.
"""

from __future__ import annotations

import re
import shutil
import string
import subprocess
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = MONITORING / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
UNIT_TESTS = PROMETHEUS_DIR / "unit-tests" / "alerts.test.yml"
README = MONITORING / "README.md"

# The original template's metric names, kept as recording rules for old dashboards.
LEGACY_NAMES = {
    "request_etl_process_latency_second", "request_etl_process_error", "request_training_process_latency_second",
    "request_training_process_error", "request_prediction_dummy", "request_count", "request_etl_count",
    "request_training_count", "request_latency_seconds", "request_etl_latency_seconds",
    "request_training_latency_seconds",
}
# What the issue asks alerts for, by the alert that covers it.
REQUIRED_ALERTS = {
    "ServiceDown", "TargetDown", "JobRunsFailing", "NoRecentSuccessfulTraining", "ServingHigh5xxRatio",
    "ServingLatencyP99High", "NoChampionLoaded", "FeatureDriftHigh", "ServingWorkersOnDifferentVersions",
}
SCRAPE_JOBS = {"serving", "etl", "training", "prometheus"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: scripts/install.sh installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def rule_groups() -> list[tuple[Path, dict]]:
    return [(path, group) for path in sorted(RULES_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"]]


def alerts() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for _, group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in found, f"alert {rule['alert']} defined twice"
                found[rule["alert"]] = rule
    return found


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for _, group in rule_groups() for rule in group["rules"] if "record" in rule}


def render_native(tmp_path: Path, **overrides: str) -> Path:
    values = {
        "SCRAPE_INTERVAL": "15s", "EVALUATION_INTERVAL": "15s", "RULES_GLOB": str(RULES_DIR / "*.yml"),
        "SERVING_TARGET": "127.0.0.1:8001", "ETL_TARGET": "127.0.0.1:8002", "TRAINING_TARGET": "127.0.0.1:8003",
        "PROMETHEUS_TARGET": "127.0.0.1:9090", "ALERTMANAGER_TARGETS": '["127.0.0.1:9093"]', **overrides,
    }
    template = string.Template((PROMETHEUS_DIR / "prometheus.native.yml.tmpl").read_text())
    path = tmp_path / "prometheus.yml"
    path.write_text(template.substitute(values))
    return path


# ----------------------------------------------------------------------------------------------- promtool


def test_rule_files_pass_promtool_check():
    result = promtool("check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_passes_promtool_check():
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rule files found" in result.stdout


def test_native_config_template_renders_a_valid_config(tmp_path):
    result = promtool("check", "config", str(render_native(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    # Without an Alertmanager (tests that start Prometheus alone) the list is empty.
    result = promtool("check", "config", str(render_native(tmp_path, ALERTMANAGER_TARGETS="[]")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------- coverage


def test_compose_and_native_configs_scrape_the_same_jobs_with_the_same_rules(tmp_path):
    compose = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    native = yaml.safe_load(render_native(tmp_path).read_text())
    assert {job["job_name"] for job in compose["scrape_configs"]} == SCRAPE_JOBS
    assert {job["job_name"] for job in native["scrape_configs"]} == SCRAPE_JOBS
    assert [Path(p).name for p in compose["rule_files"]] == [Path(p).name for p in native["rule_files"]]
    # Compose finds every container of each app through Docker's DNS (replicas of `--scale`) and scrapes its
    # Gunicorn port (the Nginx in front is for clients).
    for job in compose["scrape_configs"]:
        if job["job_name"] != "prometheus":
            assert job["dns_sd_configs"] == [
                {"names": [job["job_name"]], "type": "A", "port": 8000, "refresh_interval": "15s"}
            ], job["job_name"]
    # Both send alerts to their Alertmanager.
    assert compose["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
    assert native["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]


def test_every_required_alert_exists_with_severity_and_annotations():
    found = alerts()
    assert set(found) >= REQUIRED_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_availability_alerts_wait_a_minute_in_production():
    assert alerts()["TargetDown"]["for"] == "1m"
    assert alerts()["ServiceDown"]["for"] == "1m"


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts()) <= firing, f"alerts never seen firing in a unit test: {set(alerts()) - firing}"
    assert set(alerts()) <= quiet, f"alerts never checked to stay quiet: {set(alerts()) - quiet}"


def test_every_legacy_name_is_a_recording_rule_over_new_metrics():
    records = recording_rules()
    assert set(records) >= LEGACY_NAMES
    for name in LEGACY_NAMES:
        # Built from the new metrics, never from another legacy name.
        assert not (set(re.findall(r"\brequest_\w+", records[name])) & LEGACY_NAMES), name


def test_readme_lists_every_alert_and_recording_rule():
    text = README.read_text()
    missing = [name for name in [*alerts(), *recording_rules()] if f"`{name}`" not in text]
    assert not missing, f"monitoring/README.md does not describe: {missing}"


def test_rules_only_use_metrics_the_apps_export(exported_series, metric_names_in):
    known = exported_series | set(recording_rules()) | {"up"}
    for name, rule in [*alerts().items(), *recording_rules().items()]:
        expr = rule["expr"] if isinstance(rule, dict) else rule
        unknown = metric_names_in(expr) - known
        assert not unknown, f"{name} uses metrics nobody exports: {unknown}"


def test_readme_lists_every_exported_metric(exported_series):
    text = README.read_text()
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
             for n in exported_series}
    missing = sorted(n for n in bases if f"`{n}`" not in text)
    assert not missing, f"monitoring/README.md does not list: {missing}"
