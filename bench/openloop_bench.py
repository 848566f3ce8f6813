"""Open-loop latency: one-row predictions at constant arrival rates, ours vs the faithful original vs mlflow serve.

Per variant (behind its own Nginx, same Gunicorn worker count as the serving comparison): its maximum is
measured first with oha itself in a closed loop (8 keep-alive connections, as wrk in benchmark 1; measured with
wrk, whose own CPU per request is lower, the maximum was more than oha could then send on the same two cores:
in session 20261206T120833 ours reached 1,539 of the 1,898 req/s offered at "75%"), then oha sends requests at
fixed shares of that maximum (25/50/75/90% by default) with latency correction (bench.openloop), so queueing
shows in the percentiles. Shares run in order, variants interleaved within each share; every load run is
bounded in time.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.common import HostCpu, append_result, loadavg, median
from bench.openloop import AccessLogWindow, oha_binary, run_oha
from bench.serving_bench import check_answers, measure_once, payloads, wait_all_workers_on, wait_idle
from bench.stack import BenchStack, Variant

log = logging.getLogger("bench")

VARIANTS = ("ours", "original_faithful", "mlflow")
MAX_CLIENTS = 8


def _start(stack: BenchStack, name: str, version: str, *, workers: int, threads: int | None) -> Variant:
    if name == "ours":
        variant = stack.start_ours(workers=workers, threads=threads)
        wait_all_workers_on(variant, version)
        return variant
    if name == "original_faithful":
        return stack.start_original(version, kind="faithful", workers=workers)
    return stack.start_mlflow_serve(version, workers=1)


def run(*, seconds: float, runs: int = 1, shares: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9), workers: int = 2,
        threads: int | None = None, connections: int = 32, include: tuple[str, ...] = VARIANTS,
        tag: str = "") -> list[dict[str, Any]]:
    """Maximum per variant, then every share of it open-loop; every figure appended to the results file."""
    oha = oha_binary()
    payload = payloads()["one_row"]
    records: list[dict[str, Any]] = []
    config = {"workers": workers, "threads": threads, "run_seconds": seconds, "runs": runs,
              "connections": connections, "tag": tag}
    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        variants = {name: _start(stack, name, version, workers=workers, threads=threads) for name in include}
        for variant in variants.values():
            check_answers(variant, payload)
            measure_once(stack, variant, payload, connections=MAX_CLIENTS, seconds=2)  # warm-up
            wait_idle(stack, timeout=30)  # bounded: a point must not wait out a slow backlog
        maxima: dict[str, float] = {}
        for name, variant in variants.items():
            rps = [run_oha(variant.url + variant.one_row_path, payload.body(name), rate=None, seconds=seconds,
                           connections=MAX_CLIENTS, oha=oha)["achieved_rps"] for _ in range(runs)]
            wait_idle(stack, timeout=30)  # bounded: a point must not wait out a slow backlog
            maxima[name] = median(rps)
            records.append(append_result({"bench": "openloop-max", "variant": name, "clients": MAX_CLIENTS,
                                          "rps": maxima[name], "per_run": rps, "generator": "oha", **config}))
            log.info("%-18s maximum %.1f req/s (oha closed loop, %d connections)", name, maxima[name], MAX_CLIENTS)
        for run_index in range(runs):
            for share in shares:
                for name, variant in variants.items():
                    rate = share * maxima[name]
                    load_before = loadavg()[0]
                    window, host = AccessLogWindow(variant.nginx.access_log).start(), HostCpu().start()
                    figures = run_oha(variant.url + variant.one_row_path, payload.body(name), rate=rate,
                                      seconds=seconds, connections=connections, oha=oha)
                    figures.update(host.stop())
                    figures.update(window.timings())  # where the time went: app, Nginx, or before Nginx
                    wait_idle(stack, timeout=30)  # bounded: a point must not wait out a slow backlog
                    record = append_result({"bench": "openloop", "variant": name, "share": share,
                                            "rate": round(rate, 1), "max_rps": maxima[name], "run": run_index,
                                            **figures, "load_start": load_before, "load_end": loadavg()[0],
                                            **config})
                    records.append(record)
                    log.info("%-18s %3.0f%% = %7.1f req/s: achieved %7.1f p50 %s p99 %s p99.9 %s ms errors %d; "
                             "p99 seen by Nginx %s ms, of the app %s ms", name, 100 * share, rate,
                             figures["achieved_rps"], figures["p50_ms"], figures["p99_ms"], figures["p999_ms"],
                             figures["errors"], figures["nginx_p99_ms"], figures["upstream_p99_ms"])
    return records
