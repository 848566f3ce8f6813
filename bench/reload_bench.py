"""Benchmark 2: model hot reload under load: promotion to every worker serving the new version, and failures.

wrk keeps 8 clients on one-row /predict through Nginx the whole time (every non-2xx or socket error is a failed
request). Meanwhile the champion alias is moved to a new version in MLflow, in two ways:

- ``alias``: only the alias is set; the workers find it at their next registry poll (MODEL_POLL_SECONDS);
- ``alias+reload``: the alias is set and the reload endpoint is called, as the training service does.

"Every worker on the new version" is read from serving's /metrics (``serving_model_version``, one series per
live worker pid) polled every 50 ms; two sampler threads also record the version named by each /predict answer
(the last answer naming the old version bounds the switch as clients see it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests

from bench.common import append_result, loadavg
from bench.loadgen import run_wrk
from bench.serving_bench import payloads, wait_all_workers_on
from bench.stack import ADMIN_TOKEN, BenchStack, Variant
from devstack.stack import worker_model_versions

log = logging.getLogger("bench")

LOAD_SECONDS = 16.0
PROMOTE_AT = 4.0


def worker_versions(variant: Variant) -> dict[int, str]:
    """Version served per live worker pid, from /metrics."""
    text = requests.get(f"{variant.url}/metrics", timeout=2).text
    return {pid: str(version) for pid, version in worker_model_versions(text).items()}


def _sampler(url: str, body: bytes, stop: threading.Event, seen: list[tuple[float, str | None, int]]) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            try:
                response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)
                version = response.json().get("model", {}).get("version") if response.status_code == 200 else None
                seen.append((time.monotonic(), version, response.status_code))
            except requests.RequestException:
                seen.append((time.monotonic(), None, 0))


def trial(stack: BenchStack, ours: Variant, *, old: str, new: str, nudge: bool) -> dict[str, Any]:
    """Promote `new` while wrk runs; measure when every worker serves it and count failed requests."""
    body = payloads()["one_row"].body("ours")
    load: dict[str, Any] = {}
    wrk = threading.Thread(target=lambda: load.update(
        run_wrk(f"{ours.url}/predict", body, connections=8, seconds=LOAD_SECONDS).as_dict()))
    stop = threading.Event()
    seen: list[tuple[float, str | None, int]] = []
    samplers = [threading.Thread(target=_sampler, args=(f"{ours.url}/predict", body, stop, seen)) for _ in range(2)]
    load_start = loadavg()[0]
    wrk.start()
    for sampler in samplers:
        sampler.start()
    time.sleep(PROMOTE_AT)
    workers_before = worker_versions(ours)
    promoted_at = time.monotonic()
    stack.registry().set_alias("champion", new)
    alias_set_s = time.monotonic() - promoted_at
    nudge_status = None
    if nudge:
        nudge_status = requests.post(f"{ours.url}/model/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                     timeout=30).status_code
    all_workers_s = None
    deadline = promoted_at + LOAD_SECONDS - PROMOTE_AT - 1
    workers: dict[int, str] = {}
    while time.monotonic() < deadline:
        try:
            workers = worker_versions(ours)
        except requests.RequestException:
            workers = {}
        if workers and all(v == new for v in workers.values()) and len(workers) >= len(workers_before):
            all_workers_s = time.monotonic() - promoted_at
            break
        time.sleep(0.05)
    wrk.join(timeout=LOAD_SECONDS + 60)
    stop.set()
    for sampler in samplers:
        sampler.join(timeout=10)
    old_after = [t - promoted_at for t, version, _ in seen if version == old and t > promoted_at]
    sampler_failures = sum(1 for _, _, status in seen if status != 200)
    record = {
        "bench": "reload", "mode": "alias+reload" if nudge else "alias", "old_version": old, "new_version": new,
        "workers": len(workers_before), "all_workers_new_s": round(all_workers_s, 3) if all_workers_s else None,
        "last_old_answer_s": round(max(old_after), 3) if old_after else 0.0, "alias_call_s": round(alias_set_s, 3),
        "reload_call_status": nudge_status, "wrk": load, "failed_requests": load.get("errors", 0) + sampler_failures,
        "sampler_requests": len(seen), "load_start": load_start, "load_end": loadavg()[0],
    }
    log.info("reload (%s): all workers on %s after %s s, last old answer %.2f s, %d failed requests",
             record["mode"], new, record["all_workers_new_s"], record["last_old_answer_s"], record["failed_requests"])
    return record


def run(*, threads: int | None = None, repeats: int = 2, tag: str = "") -> list[dict[str, Any]]:
    """Alternate alias-only and alias+reload promotions, `repeats` times each."""
    records = []
    with BenchStack() as stack:
        stack.start_infra()
        current = stack.register_model(seed=1)
        spares = [stack.register_model(seed=10 + i, champion=False) for i in range(2 * repeats)]
        ours = stack.start_ours(threads=threads)
        wait_all_workers_on(ours, current)
        time.sleep(3)  # past the first poll cycle of both workers
        for i, new in enumerate(spares):
            record = trial(stack, ours, old=current, new=new, nudge=i % 2 == 1)
            records.append(append_result({**record, "threads": threads, "tag": tag}))
            current = new
            time.sleep(2)
    return records
