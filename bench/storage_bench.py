"""What storing a 1,000-row batch of predictions costs the database (FerretDB), per document layout.

- ``per-row``: the documents serving writes (``mlstack_core.predictions.batch_documents``, one per row);
- ``bucket``: one document per request holding the inputs and predictions as column arrays (not what serving
  does: measured to show what that trade-off would buy).
Each layout inserts the same batches into its own collection of one FerretDB with ``insert_many``, one batch
at a time; the figure is FerretDB's CPU (utime+stime) per 1,000 rows, and rows/s of the single writer.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np

from bench.common import CpuMeter, append_result, loadavg
from bench.stack import BenchStack

log = logging.getLogger("bench")

DATABASE = "BENCH_STORAGE"
BATCH_ROWS = 1000


def _batch(seed: int) -> Any:
    from mlstack_core.data.generator import FEATURES, generate_frame
    from mlstack_core.predictions import PredictionBatch

    frame = generate_frame(BATCH_ROWS, seed=seed)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    return PredictionBatch(
        features=features,
        predictions=features @ np.linspace(0.1, 1.1, len(FEATURES)),
        model={"name": "sk-learn-linear-reg-model", "version": "3", "run_id": "0" * 32},
        request_id="f" * 32,
        created_at=dt.datetime.now(dt.UTC),
    )


def per_row(batch: Any) -> list[dict[str, Any]]:
    """Serving's own documents for the batch."""
    from mlstack_core.predictions import batch_documents

    return batch_documents(batch)


def bucket(batch: Any) -> list[dict[str, Any]]:
    """One document for the whole batch, columns as arrays."""
    from mlstack_core.data.generator import FEATURES

    return [{
        "inputs": {name: batch.features[:, i].tolist() for i, name in enumerate(FEATURES)},
        "predictions": batch.predictions.tolist(),
        "rows": len(batch.predictions),
        "model_name": batch.model["name"], "model_version": batch.model["version"], "run_id": batch.model["run_id"],
        "request_id": batch.request_id, "created_at": batch.created_at,
    }]


LAYOUTS = {"per-row": per_row, "bucket": bucket}


def run(*, batches: int = 50, runs: int = 3, tag: str = "") -> list[dict[str, Any]]:
    """Insert `batches` 1,000-row batches per layout, layouts alternating, `runs` times."""
    records = []
    data = [_batch(seed) for seed in range(batches)]
    with BenchStack() as stack:
        stack.start_infra(mlflow=False)
        assert stack.ferretdb is not None
        with stack.ferretdb.client(socketTimeoutMS=600_000) as client:
            for run_index in range(runs):
                for layout, make in LAYOUTS.items():
                    collection = client[DATABASE][f"{layout.replace('-', '_')}_{run_index}"]
                    collection.insert_many(make(data[0]))  # creates the collection outside the measurement
                    docs = [make(batch) for batch in data]  # built beforehand: only the database is measured
                    meter = CpuMeter({"ferretdb": [stack.ferretdb.pid]}).start()
                    load = loadavg()[0]
                    started = time.perf_counter()
                    for batch_docs in docs:
                        collection.insert_many(batch_docs, ordered=False)
                    seconds = time.perf_counter() - started
                    cpu = meter.stop()["ferretdb"]
                    rows = batches * BATCH_ROWS
                    record = append_result({
                        "bench": "storage-layout", "layout": layout, "batches": batches, "rows": rows,
                        "run": run_index, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                        "ferretdb_cpu_s": cpu, "ferretdb_cpu_ms_per_1000_rows": round(1000 * cpu / rows * 1000, 2),
                        "load_start": load, "load_end": loadavg()[0], "tag": tag,
                    })
                    records.append(record)
                    log.info("%-8s %d rows in %.2f s: %.0f rows/s, FerretDB %.1f CPU ms per 1,000 rows", layout,
                             rows, seconds, rows / seconds, record["ferretdb_cpu_ms_per_1000_rows"])
    return records
