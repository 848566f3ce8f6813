"""Benchmark 1 (and 5): one-row and 1,000-row predictions through Nginx, ours vs the original path (faithful and
light, see bench.original_apps) vs mlflow serve.

Every variant runs at the same time on the same machine, and runs are interleaved (variant A, B, C, A, B, C...)
so slow drifts of the background load hit every variant alike; ratios are taken between medians of the same
run. Per run: req/s, rows/s, p50/p99 latency, errors, and CPU seconds per 1,000 requests of each process tree
(app server, Nginx, FerretDB) read from /proc before and after.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from bench.common import CpuMeter, append_result, loadavg, median, pss_mib, rss_mib
from bench.loadgen import run_wrk
from bench.stack import BenchStack, Variant

log = logging.getLogger("bench")

BATCH_ROWS = 1000
GTHREADS = 4
# Reference variants (floors, the threaded configuration) run at 8 clients only, to keep the whole run short.
FLOORS = ("floor_flask", "floor_wsgi", "floor_flask_gthread", "floor_wsgi_gthread")
EIGHT_CLIENTS_ONLY = frozenset({"ours_gthread", *FLOORS})
# The original template's /predictDummy/: as its users run it, and one predict with no logging or metrics.
ORIGINALS = ("original_faithful", "original_light")


@dataclass(frozen=True)
class Payload:
    """What one request carries, shaped for each variant's API."""

    name: str
    rows: list[dict[str, float]]

    def body(self, variant: str) -> bytes:
        """The JSON body variant expects for these rows (the same rows for everyone)."""
        if variant == "mlflow":
            return json.dumps({"dataframe_records": self.rows}).encode()
        if len(self.rows) == 1:
            return json.dumps(self.rows[0]).encode()  # ours and the original: one row object
        return json.dumps({"dataframe_records": self.rows}).encode()  # ours accepts MLflow's shape too


def payloads(seed: int = 3) -> dict[str, Payload]:
    """One row and a 1,000-row batch of generated wine rows."""
    from mlstack_core.data.generator import FEATURES, generate_frame

    frame = generate_frame(BATCH_ROWS, seed=seed)[list(FEATURES)]
    rows = [dict(zip(FEATURES, values, strict=True)) for values in frame.to_numpy().tolist()]
    return {"one_row": Payload("one_row", rows[:1]), "batch_1000": Payload("batch_1000", rows)}


def path_for(variant: Variant, payload: Payload) -> str | None:
    """The endpoint of a variant for a payload (None: the variant has no batch endpoint)."""
    return variant.one_row_path if len(payload.rows) == 1 else variant.batch_path


def check_answers(variant: Variant, payload: Payload) -> Any:
    """One request, checked: 200 and one prediction per row."""
    path = path_for(variant, payload)
    response = requests.post(variant.url + path, data=payload.body(variant.name),
                             headers={"Content-Type": "application/json"}, timeout=30)
    response.raise_for_status()
    body = response.json()
    got = body.get("predictions") or [body.get("prediction", body.get("result"))]
    if not variant.name.startswith("floor_"):  # the floors answer a constant
        assert len(got) == len(payload.rows), f"{variant.name}: {len(got)} predictions for {len(payload.rows)} rows"
    return got


def wait_all_workers_on(variant: Variant, version: str, timeout: float = 60.0) -> None:
    """Until 20 answers in a row of /model name the version (both workers have loaded it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = {(requests.get(f"{variant.url}/model", timeout=5).json().get("model") or {}).get("version")
                    for _ in range(20)}
        except requests.RequestException:
            seen = set()
        if seen == {version}:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{variant.name} workers not all on version {version} after {timeout:.0f} s")


def measure_once(stack: BenchStack, variant: Variant, payload: Payload, *, connections: int, seconds: float,
                 max_requests: int | None = None) -> dict[str, Any]:
    """One wrk run against a variant through its Nginx, with CPU per process tree."""
    roots = {"app": variant.app_pids(), "nginx": variant.nginx_pids()}
    if stack.ferretdb is not None and stack.ferretdb.pid:
        roots["ferretdb"] = [stack.ferretdb.pid]
    load_before = loadavg()[0]
    meter = CpuMeter(roots).start()
    result = run_wrk(variant.url + path_for(variant, payload), payload.body(variant.name),
                     connections=connections, seconds=seconds, max_requests=max_requests)
    cpu = meter.stop()
    per_1000 = {k: round(1000 * v / result.requests, 3) if result.requests else None for k, v in cpu.items()}
    return {
        **result.as_dict(),
        "rows_per_s": round(result.rps * len(payload.rows), 1),
        "cpu_s": cpu,
        "cpu_s_per_1000_requests": per_1000,
        "load_start": load_before,
        "load_end": loadavg()[0],
    }


def wait_idle(stack: BenchStack, *, threshold: float = 0.05, timeout: float = 300.0) -> float:
    """Wait (bounded) until FerretDB uses under threshold CPU seconds per second; returns the seconds waited."""
    if stack.ferretdb is None or not stack.ferretdb.pid:
        return 0.0
    began = time.monotonic()
    pids = [stack.ferretdb.pid]
    while time.monotonic() - began < timeout:
        meter = CpuMeter({"db": pids}).start()
        time.sleep(1.0)
        if meter.stop()["db"] < threshold:
            break
    return round(time.monotonic() - began, 1)


def worker_memory(variant: Variant) -> list[dict[str, float]]:
    """RSS and PSS (MiB) of each worker of a Gunicorn variant."""
    pids = variant.app.pids() if hasattr(variant.app, "pids") else []
    return [{"pid": pid, "rss_mib": round(rss_mib(pid), 1), "pss_mib": round(pss_mib(pid), 1)} for pid in pids]


def predictions_stored(stack: BenchStack) -> int:
    """Prediction documents in the serving database."""
    from devstack.stack import DEFAULT_MONGO_DB

    assert stack.ferretdb is not None
    with stack.ferretdb.client(serverSelectionTimeoutMS=5000, socketTimeoutMS=120_000) as client:
        return client[DEFAULT_MONGO_DB]["predictions"].estimated_document_count()


def serving_metrics(variant: Variant, *names: str) -> tuple[float, ...]:
    """Sum of each metric's samples on one read of the variant's /metrics (0 when absent)."""
    text = requests.get(f"{variant.url}/metrics", timeout=10).text
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return tuple(totals[name] for name in names)


# Variants that store their predictions (the others answer only).
STORING = frozenset({"ours", "ours_gthread"})


def storage_counters(variant: Variant) -> tuple[float, float]:
    """(predictions stored, predictions dropped) so far, summed over the variant's workers."""
    stored, dropped = serving_metrics(variant, "serving_predictions_stored_total", "serving_predictions_dropped_total")
    return stored, dropped


def run(
    *,
    seconds: float,
    runs: int,
    concurrency: tuple[int, ...] = (1, 8),
    scenarios: tuple[str, ...] = ("one_row", "batch_1000"),
    workers: int = 2,
    threads: int | None = None,
    include: tuple[str, ...] = ("ours", "ours_gthread", "ours_nostore", *FLOORS, *ORIGINALS, "mlflow"),
    memory_requests: int = 0,
    tag: str = "",
) -> list[dict[str, Any]]:
    """The whole serving comparison; every figure is appended to the results file and returned."""
    records: list[dict[str, Any]] = []
    data = payloads()
    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        variants: dict[str, Variant] = {}
        if "ours" in include:
            variants["ours"] = stack.start_ours(workers=workers, threads=threads)
            wait_all_workers_on(variants["ours"], version)
        if "ours_gthread" in include and threads in (None, 1):
            # The same service with threaded workers (Nginx then keeps its upstream connections open).
            variants["ours_gthread"] = stack.start_ours(workers=workers, threads=GTHREADS, name="ours_gthread",
                                                        extra_env={"MONGO_DB": "DUMMY_GTHREAD"})
            wait_all_workers_on(variants["ours_gthread"], version)
        if "ours_nostore" in include:
            # Prediction storage off: what storing costs, and the serving path's own capacity.
            variants["ours_nostore"] = stack.start_ours(
                workers=workers, threads=threads, name="ours_nostore",
                extra_env={"STORE_PREDICTIONS": "false"})
            wait_all_workers_on(variants["ours_nostore"], version)
        for kind in ("flask", "wsgi"):
            if f"floor_{kind}" in include:
                variants[f"floor_{kind}"] = stack.start_floor(kind, workers=workers, threads=threads)
            if f"floor_{kind}_gthread" in include:
                # Threaded workers keep Nginx's upstream connections open, which saves a connect per request.
                variants[f"floor_{kind}_gthread"] = stack.start_floor(kind, workers=workers, threads=GTHREADS,
                                                                      name=f"floor_{kind}_gthread")
        for kind in ("faithful", "light"):
            if f"original_{kind}" in include:
                variants[f"original_{kind}"] = stack.start_original(version, kind=kind, workers=workers)
        if "mlflow" in include:
            variants["mlflow"] = stack.start_mlflow_serve(version, workers=1)
        config = {"workers": workers, "threads": threads, "run_seconds": seconds, "runs": runs, "tag": tag}
        served = {name: 0 for name in variants}  # 200 answers x rows, for the stored-count check

        # Same answers from every variant, then warm-up (imports, caches, connection pools).
        for name, variant in variants.items():
            for payload in data.values():
                if path_for(variant, payload) is not None:
                    check_answers(variant, payload)
                    served[name] += len(payload.rows)
        for name, variant in variants.items():
            for payload in data.values():
                if path_for(variant, payload) is not None:
                    warm = measure_once(stack, variant, payload, connections=8, seconds=2)
                    served[name] += (warm["requests"] - warm["non_2xx"]) * len(payload.rows)
                    wait_idle(stack)
        if "ours" in variants:
            records.append(append_result({"bench": "memory", "phase": "after warm-up", "variant": "ours",
                                          "worker_memory": worker_memory(variants["ours"]), **config}))

        for run_index in range(runs):
            for scenario in scenarios:
                payload = data[scenario]
                for clients in concurrency:
                    for name, variant in variants.items():
                        if path_for(variant, payload) is None or (clients != 8 and name in EIGHT_CLIENTS_ONLY):
                            continue
                        counters = storage_counters(variant) if name in STORING else None
                        figures = measure_once(stack, variant, payload, connections=clients, seconds=seconds)
                        served[name] += (figures["requests"] - figures["non_2xx"]) * len(payload.rows)
                        # The writer may still be storing a backlog: let FerretDB finish before the next variant,
                        # and count that work too (the FerretDB column of the run covers only the load itself).
                        settle = CpuMeter({"ferretdb": [stack.ferretdb.pid]}).start() if stack.ferretdb else None
                        figures["settle_s"] = wait_idle(stack)
                        if settle is not None:
                            figures["ferretdb_cpu_s_incl_settle"] = round(
                                (figures["cpu_s"].get("ferretdb") or 0.0) + settle.stop()["ferretdb"], 3)
                        if counters is not None:
                            after = storage_counters(variant)
                            figures["rows_stored"] = int(after[0] - counters[0])
                            figures["rows_dropped"] = int(after[1] - counters[1])
                        record = append_result({"bench": "serving", "variant": name, "scenario": scenario,
                                                "clients": clients, "run": run_index, **config, **figures})
                        records.append(record)
                        log.info("%-12s %-10s c=%d run %d: %8.1f req/s %9.1f rows/s p50 %.2f p99 %.2f ms "
                                 "errors %d cpu/1000 %s", name, scenario, clients, run_index, figures["rps"],
                                 figures["rows_per_s"], figures["p50_ms"], figures["p99_ms"], figures["errors"],
                                 figures["cpu_s_per_1000_requests"])

        if "ours" in variants:
            records.append(storage_check(stack, variants["ours"], served["ours"], config))
            if memory_requests:
                records.append(memory_run(stack, variants["ours"], data["one_row"], memory_requests, config))
    return records


def storage_check(stack: BenchStack, ours: Variant, expected: int, config: dict[str, Any], *,
                  count_documents: bool = False) -> dict[str, Any]:
    """After the runs: are the predictions ours answered stored (or counted as dropped)?"""
    # The writers' own counters: counting millions of documents in FerretDB takes minutes (it scans them).
    deadline = time.monotonic() + 600
    stored, last_change, previous = 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        stored = int(storage_counters(ours)[0])
        if stored >= expected:
            break
        if stored != previous:
            previous, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > 15:
            break  # no progress for 15 s: the writer has nothing left
        time.sleep(1)
    written, dropped = storage_counters(ours)
    # wrk does not count the requests in flight when a run ends, which the server still answers and stores:
    # stored may exceed the counted rows by up to clients x rows per request per run, never fall short.
    record = {"bench": "storage", "variant": "ours", "answered_rows_counted": expected, "stored": int(written),
              "dropped_counted": dropped, "complete": written >= expected and dropped == 0, **config}
    if count_documents:
        with stack.ferretdb.client(socketTimeoutMS=600_000) as client:  # type: ignore[union-attr]
            from devstack.stack import DEFAULT_MONGO_DB
            from mlstack_core.predictions import PredictionsRepository

            record["documents_in_db"] = PredictionsRepository(client[DEFAULT_MONGO_DB]["predictions"]).stored_rows()
    log.info("storage: %s", record)
    return append_result(record)


def memory_run(stack: BenchStack, ours: Variant, payload: Payload, count: int, config: dict[str, Any]) -> dict:
    """RSS per worker after `count` more one-row requests (8 clients, bounded by count and by time)."""
    before = worker_memory(ours)
    # wrk waits out -d even after every connection reached its share of the count: keep -d near what the count
    # needs at 1,500 req/s (about half what ours answers here); the record says how many requests were made.
    figures = measure_once(stack, ours, payload, connections=8, seconds=max(60, count // 1500), max_requests=count)
    after = worker_memory(ours)
    record = {"bench": "memory", "phase": f"after {figures['requests']} more requests", "variant": "ours",
              "requests": figures["requests"], "errors": figures["errors"], "worker_memory_before": before,
              "worker_memory": after, **config}
    log.info("memory: before %s after %s (%d requests)", before, after, figures["requests"])
    return append_result(record)


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Medians per (variant, scenario, clients)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in records:
        if record.get("bench") == "serving":
            groups.setdefault((record["variant"], record["scenario"], record["clients"]), []).append(record)
    out = {}
    for key, items in groups.items():
        out[key] = {
            "rps": median(r["rps"] for r in items),
            "rows_per_s": median(r["rows_per_s"] for r in items),
            "p50_ms": median(r["p50_ms"] for r in items),
            "p99_ms": median(r["p99_ms"] for r in items),
            "errors": sum(r["errors"] for r in items),
            "app_cpu_s_per_1000": median(r["cpu_s_per_1000_requests"]["app"] for r in items),
            "runs": len(items),
        }
    return out


def run_memory(*, requests_count: int, threads: int | None = None, tag: str = "") -> list[dict[str, Any]]:
    """Benchmark 5 on its own: worker RSS after warm-up and after `requests_count` one-row requests, then the
    stored count (writer counters and the documents in MongoDB) against the answered requests."""
    records: list[dict[str, Any]] = []
    data = payloads()
    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        ours = stack.start_ours(threads=threads)
        wait_all_workers_on(ours, version)
        config = {"workers": 2, "threads": threads, "tag": tag}
        warm = measure_once(stack, ours, data["one_row"], connections=8, seconds=3)
        answered = warm["requests"] - warm["non_2xx"]
        records.append(append_result({"bench": "memory", "phase": "after warm-up", "variant": "ours",
                                      "worker_memory": worker_memory(ours), **config}))
        record = memory_run(stack, ours, data["one_row"], requests_count, config)
        records.append(record)
        answered += record["requests"] - record["errors"]
        records.append(storage_check(stack, ours, answered, config, count_documents=True))
    return records
