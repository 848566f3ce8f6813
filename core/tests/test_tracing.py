"""Traces: off by default with nothing installed; on, requests, HTTP calls and job runs are spans, logs carry ids."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask, jsonify
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pythonjsonlogger.json import JsonFormatter

from mlstack_core import tracing
from mlstack_core.appkit import create_base_app
from mlstack_core.logs import RequestIdFilter, TraceContextFilter
from mlstack_core.settings import BaseServiceSettings, SettingsError, load_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def settings(offline_settings: dict[str, Any], **overrides: Any) -> BaseServiceSettings:
    return load_settings(BaseServiceSettings, {**offline_settings, "service_name": "unit", **overrides})


def test_off_by_default_installs_nothing(offline_settings: dict[str, Any]) -> None:
    off = settings(offline_settings)
    assert not off.tracing_enabled
    app = create_base_app(__name__, off)
    assert "tracing" not in app.extensions and not tracing.enabled()
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    TraceContextFilter().filter(record)
    assert not hasattr(record, "trace_id")


def test_sdk_disabled_wins_over_enabled(offline_settings: dict[str, Any]) -> None:
    assert not settings(offline_settings, OTEL_TRACES_ENABLED="true", OTEL_SDK_DISABLED="true").tracing_enabled


@pytest.mark.parametrize(("variable", "value"), [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4318"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://jaeger/v1/traces"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
])
def test_bad_tracing_settings_name_the_variable(offline_settings: dict[str, Any], variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        settings(offline_settings, **{variable: value})


def test_otlp_traces_url(offline_settings: dict[str, Any]) -> None:
    base = settings(offline_settings, OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4318/")
    assert base.otlp_traces_url() == "http://jaeger:4318/v1/traces"
    full = settings(offline_settings, OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4318",
                    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://collector:4318/custom")
    assert full.otlp_traces_url() == "http://collector:4318/custom"


@pytest.fixture
def spans(offline_settings: dict[str, Any]) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, spans kept in memory; everything uninstalled afterwards."""
    exporter = InMemorySpanExporter()
    tracing.configure_provider(settings(offline_settings, OTEL_TRACES_ENABLED="true"), exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture
def traced_app(offline_settings: dict[str, Any], spans: InMemorySpanExporter) -> Flask:
    app = create_base_app(__name__, settings(offline_settings, OTEL_TRACES_ENABLED="true"))

    @app.get("/work")
    def work():
        logging.getLogger("unit.work").info("working")
        tracing.annotate({"rows.inserted": 3, "model.version": None})
        return jsonify(ok=True)

    return app


class _Recorder(requests.adapters.BaseAdapter):
    """A transport that answers 200 and keeps the headers it was sent (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []

    def send(self, request, **kwargs):
        self.sent.append(dict(request.headers))
        response = requests.Response()
        response.status_code, response.request, response.url = 200, request, request.url
        response.raw = io.BytesIO(b"{}")
        return response

    def close(self) -> None:
        pass


def _json_log_handler() -> tuple[logging.Handler, io.StringIO]:
    # What logging.yaml's json formatter and filters do, into a buffer.
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(request_id)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(TraceContextFilter())
    return handler, buffer


def test_a_request_continues_the_callers_trace_with_ids_in_the_logs(
    traced_app: Flask, spans: InMemorySpanExporter
) -> None:
    assert traced_app.extensions["tracing"] is not None and tracing.enabled()
    handler, buffer = _json_log_handler()
    logging.getLogger("unit.work").addHandler(handler)
    try:
        response = traced_app.test_client().get(
            "/work", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "X-Request-ID": "req-1"})
    finally:
        logging.getLogger("unit.work").removeHandler(handler)
    assert response.status_code == 200
    (span,) = spans.get_finished_spans()
    assert span.kind == SpanKind.SERVER and span.name == "GET /work"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["mlstack.rows.inserted"] == 3 and "mlstack.model.version" not in span.attributes
    assert span.attributes["mlstack.request_id"] == "req-1"
    assert span.resource.attributes["service.name"] == "unit"
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert line["message"] == "working" and line["request_id"] == "req-1"
    assert line["trace_id"] == TRACE_ID and line["span_id"] == format(span.context.span_id, "016x")


def test_probes_and_metrics_make_no_span(traced_app: Flask, spans: InMemorySpanExporter) -> None:
    client = traced_app.test_client()
    for path in ("/health", "/metrics", "/ready"):
        client.get(path)
    assert spans.get_finished_spans() == ()


def test_a_job_run_is_a_new_trace_whose_calls_carry_traceparent(
    traced_app: Flask, spans: InMemorySpanExporter
) -> None:
    recorder = _Recorder()
    session = requests.Session()
    session.mount("http://", recorder)
    tracer = tracing._tracer
    # What is current (here: an unrelated request) must not become the run's parent.
    with tracer.start_as_current_span("an unrelated request"), \
            tracing.run_span("etl run", {"job": "etl", "run_id": "r1", "request_id": None}):
        session.post("http://serving.invalid/predict", json={})
        tracing.annotate({"rows.sent": 5})
    by_name = {span.name: span for span in spans.get_finished_spans()}
    run, call = by_name["etl run"], by_name["POST"]
    assert run.parent is None and run.context.trace_id != by_name["an unrelated request"].context.trace_id
    assert dict(run.attributes) == {"mlstack.job": "etl", "mlstack.run_id": "r1", "mlstack.rows.sent": 5}
    assert call.kind == SpanKind.CLIENT and call.parent.span_id == run.context.span_id
    (headers,) = recorder.sent
    trace_id, span_id = format(run.context.trace_id, "032x"), format(call.context.span_id, "016x")
    version, sent_trace, sent_parent, flags = headers["traceparent"].split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, span_id) and int(flags, 16) & 1  # sampled


def test_background_calls_start_no_trace(traced_app: Flask, spans: InMemorySpanExporter) -> None:
    recorder = _Recorder()
    session = requests.Session()
    session.mount("http://", recorder)
    # A poll from a thread of its own (the model watcher, the scheduler's ticks): no request, no run around it.
    worker = threading.Thread(target=session.get, args=("http://mlflow.invalid/api",))
    worker.start()
    worker.join(10)
    assert spans.get_finished_spans() == ()
    # What it calls hears "not sampled", so a service of ours it reaches records nothing of it either.
    assert int(recorder.sent[0]["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0


def test_a_failed_run_is_marked_on_its_span(traced_app: Flask, spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.run_span("training run", {"job": "training"}):
        raise RuntimeError("registry down")
    (span,) = spans.get_finished_spans()
    assert not span.status.is_ok and span.events[0].name == "exception"
