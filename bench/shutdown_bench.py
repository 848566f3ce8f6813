"""Prediction storage loses nothing on graceful shutdown: SIGTERM to Gunicorn under load, then count.

Client threads post one-row predictions straight to serving's Gunicorn and count the 200 answers; after a few
seconds the Gunicorn master gets SIGTERM while they keep sending; when it has exited, the prediction documents
in MongoDB (a database of their own) must equal the 200 answers. tests/e2e/test_serving_shutdown.py asserts the
same as a test; this records the figures (answers, stored, shutdown time) with the other results.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from typing import Any

import requests

from bench.common import append_result, loadavg
from bench.serving_bench import payloads, wait_all_workers_on
from bench.stack import BenchStack
from mlstack_core.predictions import PredictionsRepository

log = logging.getLogger("bench")

DATABASE = "BENCH_SHUTDOWN"


def _client(url: str, body: bytes, stop: threading.Event, counts: collections.Counter, lock: threading.Lock,
            max_requests: int) -> None:
    sent = 0
    with requests.Session() as session:
        while not stop.is_set() and sent < max_requests:
            sent += 1
            try:
                status = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10
                                      ).status_code
            except requests.RequestException:
                status = "connection error"
                time.sleep(0.01)
            with lock:
                counts[status] += 1


def run(*, threads: int | None = None, clients: int = 4, before_s: float = 4.0, after_s: float = 2.0,
        tag: str = "") -> dict[str, Any]:
    """One SIGTERM under load; the answer counts and the stored count."""
    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        ours = stack.start_ours(threads=threads, extra_env={"MONGO_DB": DATABASE, "MONITOR_ENABLED": "false"})
        wait_all_workers_on(ours, version)
        assert stack.ferretdb is not None
        with stack.ferretdb.client() as client:
            before = PredictionsRepository(client[DATABASE]["predictions"]).stored_rows()
        counts: collections.Counter = collections.Counter()
        lock = threading.Lock()
        stop = threading.Event()
        body = payloads()["one_row"].body("ours")
        workers = [threading.Thread(target=_client, args=(f"{ours.app.url}/predict", body, stop, counts, lock,
                                                          200_000)) for _ in range(clients)]
        load_start = loadavg()[0]
        for worker in workers:
            worker.start()
        time.sleep(before_s)
        master = ours.app.pid
        assert master is not None
        with lock:
            answered_before_signal = counts[200]
        signalled = time.monotonic()
        os.kill(master, signal.SIGTERM)
        time.sleep(after_s)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        exited = None
        while time.monotonic() - signalled < 60:
            if not ours.app.running:
                exited = time.monotonic() - signalled
                break
            time.sleep(0.05)
        with stack.ferretdb.client() as client:
            stored = PredictionsRepository(client[DATABASE]["predictions"]).stored_rows() - before
        record = {
            "bench": "shutdown", "clients": clients, "answered_200": counts[200],
            "answered_200_before_sigterm": answered_before_signal, "stored": stored,
            "equal": stored == counts[200], "other_outcomes": {str(k): v for k, v in counts.items() if k != 200},
            "master_exit_s": round(exited, 2) if exited is not None else None, "threads": threads, "tag": tag,
            "load_start": load_start, "load_end": loadavg()[0],
        }
        log.info("shutdown: %d answered 200, %d stored, master exited after %s s", counts[200], stored, exited)
        return append_result(record)
