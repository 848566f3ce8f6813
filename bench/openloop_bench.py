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
import os
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


def _point(variant: Variant, body: bytes, *, rate: float, seconds: float, connections: int,
           oha: str) -> dict[str, Any]:
    """One open-loop point: oha's figures, the host's idle and steal shares, and what the variant's Nginx saw of
    the same requests (where the time went: app, Nginx, or before Nginx read them)."""
    window, host = AccessLogWindow(variant.nginx.access_log).start(), HostCpu().start()
    figures = run_oha(variant.url + variant.one_row_path, body, rate=rate, seconds=seconds,
                      connections=connections, oha=oha)
    figures.update(host.stop())
    figures.update(window.timings())
    return figures


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
                    figures = _point(variant, payload.body(name), rate=rate, seconds=seconds,
                                     connections=connections, oha=oha)
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


# The tail comparison (`bench/run.sh tail`): ours as it ships and one change each, at one open-loop rate, to find
# what the p99 at 75% of the maximum depends on. Name: (what changes, GUNICORN_WORKERS, GUNICORN_THREADS, env).
TAIL_VARIANTS: dict[str, tuple[str, int, int | None, dict[str, str]]] = {
    "ours": ("as shipped (2 sync workers, storage on, one of them polling the registry every 2 s)", 2, None, {}),
    "ours_nostore": ("prediction storage off", 2, None, {"STORE_PREDICTIONS": "false"}),
    "ours_nopoll": ("no registry polling (MODEL_POLL_SECONDS=3600)", 2, None, {"MODEL_POLL_SECONDS": "3600"}),
    "ours_4workers": ("4 sync workers", 4, None, {}),
    "ours_gthread": ("2 workers of 4 threads (Nginx keeps its upstream connections)", 2, 4, {}),
}


def registry_check_cost(stack: BenchStack, checks: int = 20) -> dict[str, Any]:
    """What one watcher check costs (serving's RegistryClient asking which version holds the alias, with the
    serving user's credentials, as a worker does): CPU ms of the MLflow server's process tree and of this client
    per check, and wall ms, over `checks` checks in a row after one to warm up."""
    import time

    from bench.common import CpuMeter
    from devstack.stack import MODEL_ALIAS, MODEL_NAME
    from serving.model_store import RegistryClient

    assert stack.mlflow is not None and stack.mlflow.pid
    saved = dict(os.environ)
    os.environ.update(stack.mlflow.client_env("serving"))
    try:
        client = RegistryClient(stack.mlflow.uri)
        client.version_for_alias(MODEL_NAME, MODEL_ALIAS)
        meter = CpuMeter({"mlflow": [stack.mlflow.pid]}).start()
        began, cpu = time.monotonic(), time.process_time()
        for _ in range(checks):
            client.version_for_alias(MODEL_NAME, MODEL_ALIAS)
        wall, client_cpu = time.monotonic() - began, time.process_time() - cpu
        server_cpu = meter.stop()["mlflow"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"checks": checks, "mlflow_cpu_ms": round(1000 * server_cpu / checks, 2),
            "client_cpu_ms": round(1000 * client_cpu / checks, 2), "wall_ms": round(1000 * wall / checks, 2)}


def run_tail(*, seconds: float, runs: int = 3, share: float = 0.75, connections: int = 32,
             tag: str = "") -> list[dict[str, Any]]:
    """Ours' maximum (oha closed loop), then every variant of TAIL_VARIANTS at `share` of it, the variants taking
    turns within each run (a noisy minute hits all of them alike). Only the variant measured is running: an idle
    one still polls the registry from every worker, which loads the MLflow server on the same two cores (five
    variants at once did, in a first attempt). Every figure appended to the results file."""
    oha = oha_binary()
    payload = payloads()["one_row"]
    records: list[dict[str, Any]] = []
    config = {"run_seconds": seconds, "runs": runs, "connections": connections, "share": share,
              "max_clients": MAX_CLIENTS, "tag": tag}

    def start(stack: BenchStack, name: str, version: str) -> Variant:
        _, workers, threads, env = TAIL_VARIANTS[name]
        variant = stack.start_ours(workers=workers, threads=threads, name=name,
                                   extra_env={"MONGO_DB": f"DUMMY_TAIL_{name.upper()}", **env})
        wait_all_workers_on(variant, version)
        check_answers(variant, payload)
        measure_once(stack, variant, payload, connections=MAX_CLIENTS, seconds=2)  # warm-up
        wait_idle(stack, timeout=30)
        return variant

    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        records.append(append_result({"bench": "registry-check", **registry_check_cost(stack), "tag": tag}))
        ours = start(stack, "ours", version)
        maximum = median(run_oha(ours.url + ours.one_row_path, payload.body("ours"), rate=None, seconds=seconds,
                                 connections=MAX_CLIENTS, oha=oha)["achieved_rps"] for _ in range(runs))
        stack.stop_variant("ours")
        rate = share * maximum
        log.info("tail: ours maximum %.1f req/s; every variant at %.1f req/s", maximum, rate)
        for run_index in range(runs):
            for name in TAIL_VARIANTS:
                variant = start(stack, name, version)
                load_before = loadavg()[0]
                figures = _point(variant, payload.body("ours"), rate=rate, seconds=seconds, connections=connections,
                                 oha=oha)
                stack.stop_variant(name)
                records.append(append_result({
                    "bench": "openloop-tail", "variant": name, "change": TAIL_VARIANTS[name][0],
                    "rate": round(rate, 1), "max_rps": maximum, "run": run_index, **figures,
                    "load_start": load_before, "load_end": loadavg()[0], **config}))
                log.info("tail %-14s run %d: p50 %s p99 %s ms (in Nginx %s, app %s) errors %d, host idle %s",
                         name, run_index, figures["p50_ms"], figures["p99_ms"], figures["nginx_p99_ms"],
                         figures["upstream_p99_ms"], figures["errors"], figures["host_idle_share"])
    return records
