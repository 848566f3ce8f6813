"""Traces end to end on real servers: the native stack exporting to a real Jaeger, read back through its query API.

One manual ETL run (through Nginx, admin token) must give ONE trace holding the run's span with its row counts,
the ETL's MongoDB spans, its call to serving, serving's /predict span (continued through serving's Nginx from the
ETL's traceparent) with the model version, and serving's MongoDB spans. The bootstrap training run is a trace of
its own with the model and the promotion decision, continued into serving's reload. JSON logs carry the ids.

Jaeger is built from the Go module proxy on first use (scripts/tracing/jaeger.sh, minutes; then cached in
.tools/bin), hence the module's time limit.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import requests

from devstack.jaeger import BUILD_TIMEOUT, Jaeger, find_trace, jaeger_binary, spans_by_service
from devstack.polling import run_job_to_end, wait_until
from mlstack_core.data.generator import FEATURES, generate_frame

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUILD_TIMEOUT + 300)]

TIMEOUT = 15
ETL_ROWS = 5
# Spans reach Jaeger within the apps' batch delay (set short here) plus Jaeger's own batching.
EXPORT_WAIT = 30


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory):
    began = time.monotonic()
    binary = jaeger_binary()
    print(f"jaeger binary ready in {time.monotonic() - began:.1f} s: {binary}")
    server = Jaeger(tmp_path_factory.mktemp("jaeger"), binary=binary)
    with server:
        yield server


@pytest.fixture(scope="module")
def stack(native_stack_factory, jaeger: Jaeger):
    began = time.monotonic()
    stack = native_stack_factory(extra_env={
        **jaeger.app_env(),
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms; the SDK's default is 5 s
        "LOG_FORMAT": "json",
        "SEED_ROWS": "0",  # the run sends only its own rows: its counts are exact
        "ETL_BATCH_SIZE": str(ETL_ROWS),
        "ETL_INTERVAL_SECONDS": "3600",
        "TRAINING_INTERVAL_SECONDS": "3600",
    })
    # The bootstrap training run gives serving its champion; the ETL's batch needs it.
    wait_until(lambda: requests.get(f"{stack.urls['serving']}/ready", timeout=TIMEOUT).status_code == 200, 180,
               "serving ready with the bootstrap champion", interval=1.0)
    print(f"stack up with a champion in {time.monotonic() - began:.1f} s")
    return stack


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return span["tag"]


def parent_id(span: dict[str, Any]) -> str | None:
    return next((ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"), None)


def mongo_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [span for span in spans if tags(span).get("db.system") == "mongodb"]


def test_one_manual_etl_run_is_one_trace_through_serving_and_mongodb(stack, jaeger: Jaeger) -> None:
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    _, record = run_job_to_end(stack.urls["etl"], "etl", headers=admin, timeout=90)
    assert record["status"] == "succeeded", record
    assert record["result"]["inserted"] == ETL_ROWS and record["result"]["predicted"] == ETL_ROWS, record
    run_id = record["run_id"]

    def complete(trace: dict[str, Any]) -> bool:
        by_service = spans_by_service(trace)
        serving = by_service.get("serving", [])
        return any(s["operationName"] == "POST /predict" for s in serving) and bool(mongo_spans(serving))

    trace = find_trace(jaeger, "etl", complete, EXPORT_WAIT, **{"mlstack.run_id": run_id})
    by_service = spans_by_service(trace)
    assert {span["traceID"] for span in trace["spans"]} == {trace["traceID"]}

    (run,) = [s for s in by_service["etl"] if s["operationName"] == "etl run"]
    assert parent_id(run) is None, "a run starts its own trace"
    assert tags(run)["mlstack.job"] == "etl" and tags(run)["mlstack.trigger"] == "manual"
    assert tags(run)["mlstack.batch_id"] == record["result"]["batch_id"], "the tag a row's batch_id finds"
    for count in ("inserted", "sent", "predicted"):
        assert tags(run)[f"mlstack.rows.{count}"] == ETL_ROWS, (count, tags(run))
    assert tags(run)["mlstack.model.version"] == record["result"]["model"]["version"]
    assert mongo_spans(by_service["etl"]), "the ETL's MongoDB writes are in the run's trace"

    (call,) = [s for s in by_service["etl"] if tags(s).get("span.kind") == "client" and s["operationName"] == "POST"]
    (predict,) = [s for s in by_service["serving"] if s["operationName"] == "POST /predict"]
    # Through serving's Nginx: the ETL's traceparent arrived unchanged, so serving's span hangs under the call.
    assert parent_id(call) == run["spanID"] and parent_id(predict) == call["spanID"]
    assert tags(predict)["mlstack.rows"] == ETL_ROWS
    assert tags(predict)["mlstack.model.version"] == record["result"]["model"]["version"]
    assert tags(predict)["mlstack.request_id"], "the request id Nginx logs is on the span"
    stored = mongo_spans(by_service["serving"])
    assert any(parent_id(span) == predict["spanID"] for span in stored), "serving stored the rows inside /predict"


def test_the_bootstrap_training_run_carries_the_promotion_into_servings_reload(stack, jaeger: Jaeger) -> None:
    def promoted(trace: dict[str, Any]) -> bool:
        runs = [s for s in spans_by_service(trace).get("training", []) if s["operationName"] == "training run"]
        return bool(runs) and tags(runs[0]).get("mlstack.promotion.outcome") == "promoted"

    trace = find_trace(jaeger, "training", promoted, EXPORT_WAIT, **{"mlstack.job": "training"})
    by_service = spans_by_service(trace)
    (run,) = [s for s in by_service["training"] if s["operationName"] == "training run"]
    assert tags(run)["mlstack.model.name"] == "sk-learn-linear-reg-model"
    assert tags(run)["mlstack.model.version"] and tags(run)["mlstack.promotion.reason"]
    assert mongo_spans(by_service["training"]), "the training data read is in the run's trace"
    # The nudge: training's call to serving's reload continues the run's trace in serving.
    assert any("/loadModel" in s["operationName"] for s in by_service.get("serving", [])), \
        sorted({s["operationName"] for s in trace["spans"]})
    # The run's log lines (LOG_FORMAT=json) carry its trace id.
    log_file = stack.apps["training"].app_log_dir / "logs.log"
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == trace["traceID"] and line.get("span_id") for line in lines)


def test_a_callers_traceparent_passes_through_nginx(stack, jaeger: Jaeger) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    row = generate_frame(1, seed=3)[list(FEATURES)].iloc[0].to_dict()
    response = requests.post(f"{stack.urls['serving']}/predict", json=row, timeout=TIMEOUT,
                             headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert response.status_code == 200, response.text
    trace = wait_until(lambda: jaeger.trace(trace_id), EXPORT_WAIT, f"trace {trace_id} in Jaeger", interval=0.5)
    (span,) = [s for s in spans_by_service(trace)["serving"] if s["operationName"] == "POST /predict"]
    assert parent_id(span) == parent
    assert tags(span)["mlstack.request_id"] == response.headers["X-Request-ID"]
