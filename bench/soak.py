"""Soak: the whole native stack under mixed load for a set time, a fault every few minutes, then the invariants.

Load (bounded threads, ``devstack.faults.LoadDriver``): one-row anonymous predictions every 20 ms, a 1,000-row
batch every 5 s, the ETL schedule every 20 s and training every 2 min. Faults, in turn, each by the pid the
harness started: MongoDB stopped 10 s, a serving worker killed, the ETL scheduler leader killed, MLflow stopped
20 s, MongoDB killed and restarted. Every ``sample_seconds`` it reads, per service (its Gunicorn master, workers
and scheduler process) and per server: RSS, open files, and the run records per job; at the end it settles and
checks the invariants of the fault suite (``devstack.invariants``) and records growth from the first to the
last sample. Not a test: figures go to bench/results/results.jsonl (``bench: "soak"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import append_result, loadavg, machine, rss_mib
from devstack.faults import (
    LoadDriver,
    kill_and_restart,
    kill_worker,
    pause_schedule,
    paused,
    scheduler_leader_pid,
    service_pids,
)
from devstack.invariants import InvariantChecker
from devstack.polling import wait_until
from devstack.procs import descendants
from devstack.stack import MODEL_ALIAS, MODEL_NAME, NativeStack
from mlstack_core.data.generator import FEATURES, generate_frame

log = logging.getLogger("bench.soak")

RETENTION_KEEP = 5
ENV = {
    "SEED_ROWS": "0",
    "ETL_INTERVAL_SECONDS": "20",
    "ETL_BATCH_SIZE": "100",
    "TRAINING_INTERVAL_SECONDS": "120",
    "MIN_TRAINING_ROWS": "50",
    "FALLBACK_ROWS": "2000",
    "RETENTION_KEEP_VERSIONS": str(RETENTION_KEEP),
}


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _tree(pids: set[int] | list[int]) -> dict[str, float]:
    return {"rss_mib": round(sum(rss_mib(p) for p in pids if os.path.exists(f"/proc/{p}")), 1),
            "open_files": sum(_open_files(p) for p in pids), "processes": len(pids)}


def sample(stack: NativeStack) -> dict[str, Any]:
    """RSS, open files and process count per service and server; run records per job."""
    figures: dict[str, Any] = {name: _tree(service_pids(stack, name)) for name in stack.apps}
    for server in (stack.ferretdb, stack.s3, stack.mlflow):
        if server is not None and server.pid is not None:
            figures[server.name] = _tree(descendants(server.pid))
    client = stack.ferretdb.client(serverSelectionTimeoutMS=3000)  # type: ignore[union-attr]
    with contextlib.closing(client), contextlib.suppress(Exception):  # MongoDB may be the fault right now
        runs = client[stack.mongo_db]["job_runs"]
        figures["run_records"] = {job: runs.count_documents({"job": job}) for job in ("etl", "training")}
    figures["t"] = round(time.monotonic(), 1)
    return figures


def _faults(stack: NativeStack) -> list[tuple[str, Callable[[], Any]]]:
    def mongo_stopped() -> None:
        with paused(stack.ferretdb, 10):  # type: ignore[arg-type]
            pass

    def mlflow_stopped() -> None:
        with paused(stack.mlflow, 20):  # type: ignore[arg-type]
            pass

    def etl_leader_killed() -> None:
        os.kill(scheduler_leader_pid(stack, "etl"), signal.SIGKILL)

    return [
        ("mongodb stopped 10 s", mongo_stopped),
        ("serving worker killed", lambda: kill_worker(stack.apps["serving"])),
        ("etl scheduler leader killed", etl_leader_killed),
        ("mlflow stopped 20 s", mlflow_stopped),
        ("mongodb killed and restarted", lambda: kill_and_restart(stack.ferretdb, down_seconds=2)),  # type: ignore[arg-type]
    ]


def _growth(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in last.items():
        if isinstance(value, dict) and isinstance(first.get(name), dict):
            out[name] = {key: round(value[key] - first[name].get(key, 0), 1) for key in value
                         if isinstance(value[key], int | float)}
    return out


def run(*, seconds: float = 600.0, fault_every: float = 120.0, sample_seconds: float = 30.0,
        tag: str = "") -> dict[str, Any]:
    """Soak the stack for `seconds`, a fault every `fault_every` s; append and return the figures."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, NativeStack(
        Path(tmp), admin_token=os.urandom(24).hex(), extra_env=ENV
    ) as stack:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        # This process's MLflow client (here and in the invariant checker) logs in as the registry's admin.
        os.environ.update(stack.mlflow.client_env("admin"))
        registry = MlflowClient(stack.mlflow_uri)

        def champion() -> Any:
            try:
                return registry.get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS)
            except MlflowException:
                return None  # the bootstrap training has not registered it yet

        wait_until(champion, 180, "a first champion", interval=2)
        row = generate_frame(1, seed=3)[list(FEATURES)].iloc[0].to_dict()
        batch = {"rows": generate_frame(1000, seed=4)[list(FEATURES)].to_dict("records")}
        url = f"{stack.urls['serving']}/predict"
        loads = [
            LoadDriver(url, row, seconds=seconds, max_requests=int(seconds * 60), pace_seconds=0.02, name="one-row"),
            LoadDriver(url, batch, seconds=seconds, max_requests=int(seconds), pace_seconds=5.0, name="batch"),
        ]
        for load in loads:
            load.start()
        faults = _faults(stack)
        samples = [sample(stack)]
        injected: list[dict[str, Any]] = []
        began = time.monotonic()
        next_fault, next_sample = began + fault_every, began + sample_seconds
        while time.monotonic() - began < seconds:
            now = time.monotonic()
            if now >= next_fault:
                name, inject = faults[len(injected) % len(faults)]
                log.info("fault: %s", name)
                t0 = time.monotonic()
                try:
                    inject()
                    took = round(time.monotonic() - t0, 1)
                    injected.append({"fault": name, "at_s": round(t0 - began), "seconds": took})
                except Exception as exc:  # a fault that could not be injected is recorded, the soak goes on
                    injected.append({"fault": name, "at_s": round(t0 - began), "error": repr(exc)[:200]})
                next_fault = time.monotonic() + fault_every
            if now >= next_sample:
                samples.append(sample(stack))
                next_sample = now + sample_seconds
            time.sleep(0.5)
        for load in loads:
            load.stop()
        samples.append(sample(stack))
        # Schedules paused, so settling waits for the runs in flight only, not for the next fires.
        pause_schedule(stack, "etl")
        pause_schedule(stack, "training")
        checker = InvariantChecker(stack, retention_keep=RETENTION_KEEP)
        settled = checker.settle()
        report = checker.check()
        record = {
            "bench": "soak", "tag": tag, "seconds": seconds, "fault_every": fault_every, "faults": injected,
            "load": {load.name: {str(k): v for k, v in load.outcomes().items()} for load in loads},
            "settle": {k: settled.get(k) for k in ("status", "error")},
            "invariants_ok": report.ok, "invariants": report.summary(),
            "first_sample": samples[0], "last_sample": samples[-1], "growth": _growth(samples[0], samples[-1]),
            "samples": samples, "load_average": loadavg(), "machine": machine(),
        }
        append_result(record)
        return record
