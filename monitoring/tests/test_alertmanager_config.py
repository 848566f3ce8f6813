"""Alertmanager's config, offline: rendered from its template as compose and devstack render it, checked by amtool.

`amtool check-config` validates the rendered file; `amtool config routes test` proves where each severity goes.
The live counterpart (Prometheus -> Alertmanager -> a webhook, inhibition, resolution) is
tests/e2e/test_alerting_e2e.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[1]
ALERTMANAGER_DIR = MONITORING / "alertmanager"
TEMPLATE = ALERTMANAGER_DIR / "alertmanager.yml.tmpl"
RENDER = ALERTMANAGER_DIR / "render.py"
RULES_DIR = MONITORING / "prometheus" / "rules"
UNIT_TESTS = MONITORING / "prometheus" / "unit-tests" / "alerts.test.yml"
RUNBOOKS = MONITORING.parent / "docs" / "runbooks.md"
# A URL with every character that would break a naive substitution into YAML.
AWKWARD_URL = 'https://hooks.example.test/services/T0/B1?token=a&b=c#"frag" :x'


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("amtool")
    assert binary, "amtool not found: scripts/install.sh installs Debian's prometheus-alertmanager package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def render(tmp_path: Path, url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run render.py as compose's alertmanager-config job does: the URL in the environment, nothing else."""
    env = {key: value for key, value in os.environ.items() if key != "ALERT_WEBHOOK_URL"}
    if url is not None:
        env["ALERT_WEBHOOK_URL"] = url
    return subprocess.run([sys.executable, str(RENDER), *args, str(TEMPLATE), str(tmp_path / "alertmanager.yml")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    result = render(tmp_path, AWKWARD_URL)
    assert result.returncode == 0, result.stderr
    return tmp_path / "alertmanager.yml"


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for path in sorted(RULES_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule}


def test_rendered_config_passes_amtool_check(rendered: Path):
    result = amtool("check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "2 receivers" in result.stdout and "2 inhibit rules" in result.stdout


def test_the_webhook_url_arrives_whole_and_the_file_is_private(rendered: Path):
    config = yaml.safe_load(rendered.read_text())
    urls = [hook["url"] for receiver in config["receivers"] for hook in receiver["webhook_configs"]]
    assert urls == [AWKWARD_URL, AWKWARD_URL]
    assert all(hook["send_resolved"] for r in config["receivers"] for hook in r["webhook_configs"])
    assert rendered.stat().st_mode & 0o777 == 0o600


def test_compose_mode_lets_alertmanager_read_it(tmp_path: Path):
    # Compose's job runs as root and Alertmanager as nobody: the job asks for 644.
    assert render(tmp_path, "http://receiver:8080/alerts", "--mode", "644").returncode == 0
    assert (tmp_path / "alertmanager.yml").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(("url", "message"), [
    (None, "set ALERT_WEBHOOK_URL"),
    ("  ", "set ALERT_WEBHOOK_URL"),
    ("hooks.example.test/alerts", "ALERT_WEBHOOK_URL must be an http:// or https:// URL"),
    ("file:///etc/passwd", "ALERT_WEBHOOK_URL must be an http:// or https:// URL"),
])
def test_render_refuses_a_missing_or_unusable_url_naming_it(tmp_path: Path, url: str | None, message: str):
    result = render(tmp_path, url)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=ServiceDown", "job=etl"], "critical"),
    (["severity=warning", "alertname=FeatureDriftHigh", "job=serving"], "warning"),
    (["alertname=SomethingWithoutSeverity"], "critical"),
])
def test_routes_send_each_severity_to_its_receiver(rendered: Path, labels: list[str], receiver: str):
    result = amtool("config", "routes", "test", f"--config.file={rendered}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_every_alert_has_a_severity_with_its_own_route(rendered: Path):
    routes = yaml.safe_load(rendered.read_text())["route"]["routes"]
    routed = {route["matchers"][0]: route["receiver"] for route in routes}
    for name, rule in alerts().items():
        severity = rule["labels"]["severity"]
        assert routed.get(f'severity="{severity}"') == severity, name


def test_inhibition_names_real_alerts_and_labels_every_alert_carries(rendered: Path):
    names = set(alerts())
    rules = yaml.safe_load(rendered.read_text())["inhibit_rules"]
    sources = {re.fullmatch(r'alertname="(\w+)"', rule["source_matchers"][0]).group(1) for rule in rules}
    assert sources == {"ServiceDown", "TargetDown"} <= names
    assert {tuple(rule["equal"]) for rule in rules} == {("job",), ("job", "instance")}
    # ServiceDown mutes the other alerts of its job: each alert must carry `job` (its unit tests show its labels).
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    labels_seen = {check["alertname"]: expected["exp_labels"] for case in cases
                   for check in case.get("alert_rule_test", []) for expected in check.get("exp_alerts", [])}
    assert set(labels_seen) == names
    assert not [name for name, labels in labels_seen.items() if "job" not in labels]


def test_every_alert_links_its_runbook_section():
    sections = set(re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.MULTILINE))
    assert sections == set(alerts()), "docs/runbooks.md: one section per alert, named as the alert"
    for name, rule in alerts().items():
        assert rule["annotations"].get("runbook_url") == f"docs/runbooks.md#{name.lower()}", name
