"""Jaeger (v2, built from the Go module proxy by scripts/tracing/jaeger.sh): an OTLP receiver with a query API.

For the native stack's traces (``make dev DEVSTACK_ARGS=--tracing``), the trace test and the tracing benchmark.
Everything on free loopback ports, spans in memory (bounded), nothing else of Jaeger's (no sampling server,
no internal metrics port). The build carries no UI (its assets are not in the Go module): the query API answers
``/api/services``, ``/api/traces?service=...`` and ``/api/traces/<trace id>``; the compose image has the UI.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from devstack.polling import wait_until
from devstack.ports import free_port
from devstack.servers import REPO_ROOT, _http_get, _Server, base_env, find_tool

log = logging.getLogger(__name__)

BUILD_SCRIPT = REPO_ROOT / "scripts" / "tracing" / "jaeger.sh"
# A first build takes minutes (see scripts/tracing/jaeger.sh); a warm check well under a second.
BUILD_TIMEOUT = 1500


def jaeger_binary(*, build: bool = True) -> str:
    """The jaeger binary: $JAEGER_BIN, .tools/bin or PATH; built with scripts/tracing/jaeger.sh when missing."""
    try:
        return find_tool("jaeger", "JAEGER_BIN")
    except FileNotFoundError:
        if not build:
            raise
    log.info("building Jaeger with %s (first use: several minutes)", BUILD_SCRIPT.relative_to(REPO_ROOT))
    # Its progress (stderr) shows where the caller's output goes; stdout is the binary's path.
    done = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed (exit {done.returncode}); see its output")
    return done.stdout.strip().splitlines()[-1]


class JaegerQuery:
    """Jaeger's HTTP query API at ``url`` (a Jaeger this module starts, or one in a container)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def services(self) -> list[str]:
        """Service names that have sent spans."""
        return _http_get(f"{self.url}/api/services", timeout=10).json().get("data") or []

    def traces(self, service: str, *, limit: int = 20, lookback: str = "1h", **tags: str) -> list[dict[str, Any]]:
        """Recent traces with a span of ``service`` (and the given span tags), each with all its spans."""
        params = {"service": service, "limit": str(limit), "lookback": lookback}
        if tags:
            params["tags"] = json.dumps(tags)
        response = _http_get(f"{self.url}/api/traces?{urlencode(params)}", timeout=10)
        response.raise_for_status()
        return response.json().get("data") or []

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace by id with all its spans, None when Jaeger has none of it."""
        response = _http_get(f"{self.url}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json().get("data") or []
        return data[0] if data else None


class Jaeger(_Server, JaegerQuery):
    """Jaeger v2 with in-memory storage: OTLP/HTTP and OTLP/gRPC in, the HTTP query API out."""

    name = "jaeger"
    ready_timeout = 30.0

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None, max_traces: int = 20_000,
                 binary: str | None = None) -> None:
        super().__init__(workdir, port=port)  # port: the query API (Jaeger's usual 16686)
        self.otlp_http_port = free_port()
        self.otlp_grpc_port = free_port()
        self.query_grpc_port = free_port()
        self.health_port = free_port()
        self.max_traces = max_traces
        self.config_path = self.workdir / "jaeger.yaml"
        self.binary = binary or jaeger_binary()

    @property
    def otlp_endpoint(self) -> str:
        """OTLP/HTTP base URL, what the apps get as OTEL_EXPORTER_OTLP_ENDPOINT (spans go to /v1/traces)."""
        return f"http://{self.host}:{self.otlp_http_port}"

    def app_env(self) -> dict[str, str]:
        """The variables that make an app export its traces here."""
        return {"OTEL_TRACES_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint}

    def _ports(self) -> list[int]:
        return [self.port, self.otlp_http_port, self.otlp_grpc_port, self.query_grpc_port, self.health_port]

    def _before_start(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML

    def config(self) -> dict[str, Any]:
        """Jaeger's configuration (an OpenTelemetry Collector configuration with Jaeger's extensions)."""
        host = self.host
        return {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                         "exporters": ["jaeger_storage_exporter"]}},
                # The collector's own metrics would listen on a fixed port (8888): off.
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            },
            "extensions": {
                "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{host}:{self.health_port}"}},
                "jaeger_query": {
                    "storage": {"traces": "memstore"},
                    # Its own traces would go to OTLP on localhost:4317 (not ours), and the retrying client holds
                    # the process up at shutdown.
                    "enable_tracing": False,
                    "http": {"endpoint": f"{host}:{self.port}"},
                    "grpc": {"endpoint": f"{host}:{self.query_grpc_port}"},
                },
                "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": self.max_traces}}}},
            },
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"{host}:{self.otlp_grpc_port}"},
                "http": {"endpoint": f"{host}:{self.otlp_http_port}"},
            }}},
            # Spans are visible to queries within this delay of their arrival.
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
        }

    def _argv(self) -> list[str]:
        return [self.binary, "--config", f"file:{self.config_path}"]

    def _env(self) -> dict[str, str]:
        return base_env()

    def _ready(self) -> bool:
        return _http_get(f"{self.url}/api/services").status_code == 200


def spans_by_service(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A query-API trace's spans grouped by the service that made them, each with its tags as a dict."""
    processes = trace.get("processes", {})
    out: dict[str, list[dict[str, Any]]] = {}
    for span in trace.get("spans", []):
        service = processes.get(span.get("processID"), {}).get("serviceName", "?")
        tags = {tag["key"]: tag["value"] for tag in span.get("tags", [])}
        out.setdefault(service, []).append({**span, "tag": tags})
    return out


def find_trace(jaeger: JaegerQuery, service: str, predicate: Callable[[dict[str, Any]], bool], timeout: float,
               **tags: str) -> dict[str, Any]:
    """The first trace of ``service`` (with these span tags) for which ``predicate(trace)`` holds, within timeout s."""

    def matching() -> dict[str, Any] | None:
        return next((found for found in jaeger.traces(service, **tags) if predicate(found)), None)

    return wait_until(matching, timeout, f"a trace of {service} with {tags or 'any tags'} that matches", interval=0.5)
