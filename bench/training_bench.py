"""Benchmark 4: loading the training rows from MongoDB (FerretDB) and a whole training cycle, ours vs the original.

For each size the rows are inserted once (with the ETL's repository), then every measured step runs in a fresh
subprocess (:mod:`bench.training_child`) so that its peak RSS (VmHWM) is its own. FerretDB's CPU seconds
are read from /proc around each step: on this machine the server side of the read is most of the time.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, CpuMeter, append_result, loadavg, median
from bench.stack import BenchStack

log = logging.getLogger("bench")

DATABASE = "BENCH_TRAINING"
INSERT_BATCH = 10_000


def fill(stack: BenchStack, collection: str, rows: int) -> float:
    """Insert `rows` generated labelled rows in 10k batches (the ETL's insert_batch); returns seconds taken."""
    from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
    from mlstack_core.rows import RowsRepository, new_batch_id

    assert stack.ferretdb is not None
    started = time.perf_counter()
    with stack.ferretdb.client(socketTimeoutMS=600_000) as client:
        repo = RowsRepository(client[DATABASE][collection])
        done = 0
        while done < rows:
            n = min(100_000, rows - done)
            frame = generate_frame(n, seed=done)
            features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
            quality = frame[TARGET].tolist()
            for i in range(0, n, INSERT_BATCH):
                repo.insert_batch(features[i:i + INSERT_BATCH], quality[i:i + INSERT_BATCH], source="bench",
                                  batch_id=new_batch_id(), pending=False)
            done += n
            log.info("inserted %d of %d rows", done, rows)
    return time.perf_counter() - started


def child(stack: BenchStack, variant: str, collection: str, timeout: float) -> dict[str, Any]:
    """Run one step in a fresh interpreter; its figures plus FerretDB's CPU seconds during it."""
    assert stack.ferretdb is not None
    argv = [sys.executable, "-m", "bench.training_child", variant, stack.ferretdb.uri, DATABASE, collection,
            stack.mlflow.uri if stack.mlflow else ""]
    env_path = f"{REPO_ROOT}:{REPO_ROOT / 'scripts'}"
    meter = CpuMeter({"ferretdb": [stack.ferretdb.pid]}).start()
    load = loadavg()[0]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                         env={**_env(), "PYTHONPATH": env_path}, cwd=REPO_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed: {out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    figures = json.loads(line)
    figures["ferretdb_cpu_s"] = meter.stop()["ferretdb"]
    figures["load_start"] = load
    figures["load_end"] = loadavg()[0]
    return figures


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    env.setdefault("LOG_LEVEL", "WARNING")
    return env


def run(*, sizes: list[int], runs: int = 1, cycles: bool = True, tag: str = "") -> list[dict[str, Any]]:
    """Load (and, with cycles, train) at each size; ours and the original alternate."""
    records = []
    with BenchStack() as stack:
        stack.start_infra(mlflow=cycles)
        for size in sizes:
            collection = f"rows_{size}"
            insert_s = fill(stack, collection, size)
            records.append(append_result({"bench": "training-fill", "rows": size, "seconds": round(insert_s, 1),
                                          "rows_per_s": round(size / insert_s), "tag": tag}))
            timeout = max(600.0, size / 200)
            steps = ["ours-load", "original-load", "floor-load"] + (["ours-cycle", "original-cycle"] if cycles else [])
            for run_index in range(runs):
                for variant in steps:
                    figures = child(stack, variant, collection, timeout)
                    if figures["rows"] != size:
                        raise RuntimeError(f"{variant} read {figures['rows']} rows, expected {size}")
                    record = append_result({"bench": "training", "size": size, "run": run_index, "tag": tag,
                                            **figures})
                    records.append(record)
                    log.info("%-15s %8d rows: %7.2f s, peak RSS %.0f MiB (+%.0f), FerretDB CPU %.1f s",
                             variant, size, figures["seconds"], figures["peak_rss_mib"],
                             figures["peak_above_baseline_mib"], figures["ferretdb_cpu_s"])
    return records


def summarize(records: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    """Medians per (size, variant)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for record in records:
        if record.get("bench") == "training":
            groups.setdefault((record["size"], record["variant"]), []).append(record)
    return {key: {"seconds": median(r["seconds"] for r in items),
                  "peak_rss_mib": median(r["peak_rss_mib"] for r in items),
                  "peak_above_baseline_mib": median(r["peak_above_baseline_mib"] for r in items),
                  "ferretdb_cpu_s": median(r["ferretdb_cpu_s"] for r in items)}
            for key, items in groups.items()}
