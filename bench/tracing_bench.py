"""One-row /predict with tracing off and on: the same serving, Gunicorn configuration and Nginx, side by side.

    bench/run.sh tracing --seconds 10 --runs 3       (python -m bench tracing)

``untraced``: the service's defaults (OTEL_TRACES_ENABLED unset: nothing of OpenTelemetry installed).
``traced``: OTEL_TRACES_ENABLED=true, every request sampled, spans batched and exported over OTLP/HTTP to a real
Jaeger on loopback (built on first use by scripts/tracing/jaeger.sh), which runs on the same cores.
Both with STORE_PREDICTIONS=false, so FerretDB's inserts (shared by both) do not blur the difference; runs are
interleaved (untraced, traced, untraced, ...) and the ratio is the median of per-run ratios.
"""

from __future__ import annotations

import logging
from typing import Any

from bench import serving_bench
from bench.common import CpuMeter, append_result, median
from bench.serving_bench import measure_once, payloads, wait_all_workers_on
from bench.stack import BenchStack
from devstack.jaeger import Jaeger

log = logging.getLogger("bench")

VARIANTS = ("untraced", "traced")


def run(*, seconds: float, runs: int, clients: int = 8, workers: int = 2, threads: int | None = None,
        tag: str = "") -> dict[str, Any]:
    """Interleaved wrk runs against both variants; every run is appended to the results file, the summary too."""
    payload = payloads()["one_row"]
    config = {"clients": clients, "workers": workers, "threads": threads, "run_seconds": seconds, "runs": runs,
              "tag": tag}
    records: list[dict[str, Any]] = []
    with BenchStack() as stack, Jaeger(stack.workdir / "jaeger") as jaeger:
        stack.start_infra()
        version = stack.register_model(seed=1)
        common = {"STORE_PREDICTIONS": "false"}
        variants = {
            "untraced": stack.start_ours(workers=workers, threads=threads, name="untraced", extra_env=common),
            "traced": stack.start_ours(workers=workers, threads=threads, name="traced",
                                       extra_env={**common, **jaeger.app_env()}),
        }
        for variant in variants.values():
            wait_all_workers_on(variant, version)
            measure_once(stack, variant, payload, connections=clients, seconds=2)  # warm-up
        for index in range(runs):
            for name in VARIANTS:
                meter = CpuMeter({"jaeger": [jaeger.pid]} if jaeger.pid else {}).start()
                figures = measure_once(stack, variants[name], payload, connections=clients, seconds=seconds)
                figures["jaeger_cpu_s"] = meter.stop().get("jaeger")
                records.append(append_result({"bench": "tracing", "variant": name, "run": index, **config,
                                              **figures}))
                log.info("%-9s run %d: %8.1f req/s p50 %.2f p99 %.2f ms errors %d", name, index, figures["rps"],
                         figures["p50_ms"], figures["p99_ms"], figures["errors"])
        exported = len(jaeger.traces("serving", limit=5))
    summary = summarize(records) | {"traces_in_jaeger": exported, **config}
    return append_result({"bench": "tracing-summary", **summary})


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """serving_bench's medians per variant, the load at each run, and the median of per-run ratios traced/untraced."""
    medians = serving_bench.summarize([{**r, "bench": "serving", "scenario": "one_row"} for r in records])
    out: dict[str, Any] = {}
    for (name, _scenario, _clients), figures in medians.items():
        out[name] = figures | {"load": [r["load_start"] for r in records if r["variant"] == name]}
    by_run = {(r["variant"], r["run"]): r["rps"] for r in records}
    runs = sorted({r["run"] for r in records})
    ratios = [by_run["traced", i] / by_run["untraced", i] for i in runs if by_run.get(("untraced", i))]
    out["throughput_ratio"] = round(median(ratios), 3) if ratios else None
    return out
