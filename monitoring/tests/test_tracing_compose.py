"""Traces in compose, offline: Jaeger behind a profile, the apps sent to it (off by default), dashboards link to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from mlstack_core.settings import BaseServiceSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "monitoring" / "grafana" / "provisioning"
DEFAULT = re.compile(r"^\$\{[A-Z0-9_]+:-(.*)\}$")


def compose_default(value: str) -> str:
    """The value compose gives ``${NAME:-default}`` when .env leaves NAME unset."""
    match = DEFAULT.match(value)
    assert match, value
    return match.group(1)


def test_jaeger_is_a_healthchecked_opt_in_service() -> None:
    jaeger = yaml.safe_load((REPO / "monitoring" / "docker-compose.yml").read_text())["services"]["jaeger"]
    assert jaeger["profiles"] == ["tracing"]  # not started unless asked for, like the apps' export
    image, tag = jaeger["image"].rsplit(":", 1)
    assert image == "jaegertracing/jaeger" and re.fullmatch(r"2\.\d+\.\d+", tag)
    assert "wget" in jaeger["healthcheck"]["test"] and jaeger["healthcheck"]["retries"]
    assert jaeger["ports"] == ["${PUBLISH_ADDRESS:-127.0.0.1}:${JAEGER_PORT:-16686}:16686"]


def test_apps_export_to_jaeger_only_when_enabled() -> None:
    env = yaml.safe_load((REPO / "compose" / "app.yml").read_text())["services"]["app"]["environment"]
    otel = {name: compose_default(value) for name, value in env.items() if name.startswith("OTEL_")}
    assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    settings = load_settings(BaseServiceSettings, {"ADMIN_TOKEN": "compose-admin-token-0123456789", **otel})
    assert not settings.tracing_enabled
    on = load_settings(BaseServiceSettings,
                       {"ADMIN_TOKEN": "compose-admin-token-0123456789", **otel, "OTEL_TRACES_ENABLED": "true"})
    assert on.tracing_enabled and on.otlp_traces_url() == "http://jaeger:4318/v1/traces"


def test_latency_and_run_panels_link_to_their_traces() -> None:
    for board, wanted in (("serving", "service=serving&operation=POST%20%2Fpredict"),
                          ("pipeline", "service=etl&operation=etl%20run")):
        doc = json.loads((GRAFANA / "dashboards" / "mlstack" / f"{board}.json").read_text())
        assert "jaeger" in {variable["name"] for variable in doc["templating"]["list"]}
        urls = [link["url"] for panel in doc["panels"] for link in panel.get("links", [])]
        assert any(url.startswith("${jaeger}/search?") and wanted in url and "${__from}" in url for url in urls)
    (jaeger,) = yaml.safe_load((GRAFANA / "datasources" / "jaeger.yml").read_text())["datasources"]
    assert jaeger["type"] == "jaeger" and jaeger["url"] == "http://jaeger:16686"
