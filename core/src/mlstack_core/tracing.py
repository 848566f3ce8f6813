"""OpenTelemetry traces, off by default: then nothing of OpenTelemetry is imported or installed here.

On (``OTEL_TRACES_ENABLED=true``), :func:`install_tracing` (called by ``create_base_app``) gives the process one
tracer provider exporting over OTLP/HTTP and installs:

- Flask: a server span per request, continuing the caller's W3C ``traceparent`` (Nginx passes it through);
  probes and ``/metrics`` are left out;
- requests: a client span per outgoing call, with ``traceparent`` injected (the ETL's batch to serving's
  ``/predict``, training's reload nudge, MLflow calls made during a run);
- pymongo: a client span per MongoDB command;
- log records made inside a span get ``trace_id`` and ``span_id`` (mlstack_core.logs.TraceContextFilter).

Job runs start one trace each (:func:`run_span`, used by mlstack_core.jobs.runner); services add what they
know to the current span with :func:`annotate` (row counts, model version, promotion decision).

Only requests and job runs start traces: a client span without a parent (the model watcher's registry polls,
scheduler ticks, the buffered prediction writer) is not sampled, so background polling does not flood the
trace store.

Fork safety: Gunicorn does not preload the app, so every worker runs the app factory after the fork and makes
its own provider, export thread and connection; the scheduler process builds its app the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mlstack_core import logs, request_id
from mlstack_core.lifecycle import on_shutdown

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from mlstack_core.settings import BaseServiceSettings

logger = logging.getLogger(__name__)

# Probes and scrapes would be most of the spans and say nothing (regular expressions, matched in the URL).
EXCLUDED_URLS = r"/health(\?|$),/ready(\?|$),/metrics(\?|$),/ping(\?|$)"
ATTRIBUTE_PREFIX = "mlstack."

_lock = threading.Lock()
_provider: TracerProvider | None = None
_pid: int | None = None
_tracer: Any = None  # opentelemetry.trace.Tracer of this process while tracing is on


def enabled() -> bool:
    """Whether this process records traces."""
    return _tracer is not None


def configure_provider(settings: BaseServiceSettings, *, exporter: SpanExporter | None = None) -> TracerProvider:
    """The process's tracer provider, made on first call (OTLP/HTTP exporter unless one is given, e.g. in tests).

    Later calls in the same process (a test building several apps) return the same provider.
    """
    global _provider, _pid, _tracer
    with _lock:
        if _provider is not None and _pid == os.getpid():
            return _provider
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create({SERVICE_NAME: settings.otel_service_name or settings.service_name})
        provider = TracerProvider(resource=resource, sampler=_sampler(settings))
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # Batched in a thread of this process (OTEL_BSP_* tune it); a down collector costs dropped spans only.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_traces_url())))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        # Not made the global provider: the instrumentations and run_span get it explicitly, and MLflow's own
        # tracing (mlflow-tracing, which the registry client brings) stays out of it.
        _provider, _pid = provider, os.getpid()
        _tracer = provider.get_tracer("mlstack_core")
        logs.set_trace_context(_current_ids)
        on_shutdown(shutdown)
        logger.info("tracing on: %s exports spans to %s", settings.service_name,
                    "a test exporter" if exporter is not None else settings.otlp_traces_url())
        return provider


def install_tracing(app: Flask, settings: BaseServiceSettings) -> bool:
    """Trace the app's requests and the process's HTTP and MongoDB calls; False (nothing installed) when off."""
    if not settings.tracing_enabled:
        return False
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    provider = configure_provider(settings)
    # Request metrics are Prometheus's job (mlstack_core.metrics): the instrumentations' own meters stay no-ops.
    meters = NoOpMeterProvider()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider, meter_provider=meters,
                                       excluded_urls=EXCLUDED_URLS, request_hook=_tag_request)
    # Both are process-wide (requests' Session.send, pymongo's command listeners): installed once, before the
    # app makes its first client (MongoProvider connects lazily).
    if not RequestsInstrumentor().is_instrumented_by_opentelemetry:
        RequestsInstrumentor().instrument(tracer_provider=provider, meter_provider=meters)
    if not PymongoInstrumentor().is_instrumented_by_opentelemetry:
        PymongoInstrumentor().instrument(tracer_provider=provider)
    app.extensions["tracing"] = provider
    return True


def shutdown() -> None:
    """Flush and stop the process's exporter, remove the process-wide instrumentation (safe to call twice)."""
    global _provider, _pid, _tracer
    with _lock:
        provider, _provider, _pid, _tracer = _provider, None, None, None
        logs.set_trace_context(None)
    if provider is None:
        return
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (RequestsInstrumentor(), PymongoInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    provider.shutdown()


@contextlib.contextmanager
def run_span(name: str, attributes: Mapping[str, Any]) -> Iterator[None]:
    """A new trace (a root span, whatever is current) around one job run; nothing when tracing is off.

    An exception leaving the block is recorded on the span, which is marked failed.
    """
    tracer = _tracer
    if tracer is None:
        yield
        return
    from opentelemetry.context import Context

    with tracer.start_as_current_span(name, context=Context(), attributes=_clean(attributes)):
        yield


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes (``mlstack.`` is prefixed to each key) to the current span; nothing when tracing is off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_clean(attributes))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    # Span attributes take str, bool, int, float (or lists of one of them); None means "not known here".
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if not isinstance(value, str | bool | int | float):
            value = str(value)
        out[key if key.startswith(ATTRIBUTE_PREFIX) else ATTRIBUTE_PREFIX + key] = value
    return out


def _tag_request(span: Any, environ: dict[str, Any]) -> None:
    # The request id Nginx logs, as a span attribute: an access-log line leads to its trace (search by tag).
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    if incoming and span.is_recording() and request_id.accepted(incoming) == incoming:
        span.set_attribute(ATTRIBUTE_PREFIX + "request_id", incoming)


def _current_ids() -> tuple[str, str] | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _sampler(settings: BaseServiceSettings) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import sampling

    ratio = settings.otel_traces_sampler_arg
    samplers = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }
    inner = samplers[settings.otel_traces_sampler]

    class RequestsAndRunsOnly(sampling.Sampler):
        """Drops a client span that would start a trace (background polling); the rest goes to OTEL_TRACES_SAMPLER."""

        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None):
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind == trace.SpanKind.CLIENT and not parent.is_valid:
                return sampling.SamplingResult(sampling.Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"RequestsAndRunsOnly{{{inner.get_description()}}}"

    return RequestsAndRunsOnly()
