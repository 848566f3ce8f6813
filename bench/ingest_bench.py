"""Benchmark 3: ETL ingest into MongoDB (FerretDB), ours vs the original's one insert_one per row.

- ``ours-repository``: the ETL's RowsRepository.insert_batch (rows + pending marks) in 10k-row batches, from the
  validated numpy block the /ingest endpoint builds;
- ``ours-endpoint``: POST /ingest through Nginx in 10k-row JSON requests (validation, storage, forwarding to
  serving and serving's storage of the predictions all included), ETL and serving both running;
- ``ours-2-threads``: the same batches from two concurrent clients (how much FerretDB inserts in parallel);
- ``original``: one ``insert_one`` per row, the document built from a DataFrame row as the original did.
Runs alternate between the variants; each writes a fresh collection of the same FerretDB.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import requests

from bench.common import CpuMeter, append_result, loadavg
from bench.stack import ADMIN_TOKEN, BenchStack
from mlstack_core.mongo import collection_count

log = logging.getLogger("bench")

DATABASE = "BENCH_INGEST"
BATCH = 10_000


def _frame(rows: int, seed: int):
    from mlstack_core.data.generator import generate_frame

    return generate_frame(rows, seed=seed)


def ours_repository(client: Any, frame: Any, collection: str, threads: int = 1) -> int:
    """The ingest endpoint's storage step: validated rows as a numpy block, insert_batch with pending marks, from
    `threads` concurrent clients (more than one: does FerretDB insert the batches in parallel?)."""
    from concurrent.futures import ThreadPoolExecutor

    from mlstack_core.data.generator import FEATURES, TARGET
    from mlstack_core.rows import RowsRepository, new_batch_id

    repo = RowsRepository(client[DATABASE][collection])
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    quality = frame[TARGET].tolist()

    def insert(i: int) -> int:
        return len(repo.insert_batch(features[i:i + BATCH], quality[i:i + BATCH], source="ingest",
                                     batch_id=new_batch_id(), pending=True))

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(insert, range(0, len(frame), BATCH)))


def original(client: Any, frame: Any, collection: str) -> int:
    """The original ETL: one document per DataFrame row, one insert_one each."""
    col = client[DATABASE][collection]
    for record in frame.to_dict("records"):
        record["datetime_"] = dt.datetime.now(dt.UTC)
        record["prediction_status"] = "pending"
        col.insert_one(record)
    return len(frame)


def ours_endpoint(etl_url: str, frame: Any) -> int:
    """POST /ingest in 10k-row requests; returns the rows the service reports inserted."""
    rows = frame.to_dict("records")
    inserted = 0
    with requests.Session() as session:
        for i in range(0, len(rows), BATCH):
            response = session.post(f"{etl_url}/ingest", json=rows[i:i + BATCH], timeout=300,
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            response.raise_for_status()
            body = response.json()
            if body.get("predicted") != body["inserted"]:
                raise RuntimeError(f"serving did not predict the ingested rows: {body.get('forward_error')}")
            inserted += body["inserted"]
    return inserted


def run(*, rows: int, runs: int = 1, endpoint: bool = True, tag: str = "") -> list[dict[str, Any]]:
    """Ingest `rows` rows with each variant, alternating, `runs` times."""
    records = []
    frame = _frame(rows, seed=5)
    with BenchStack() as stack:
        stack.start_infra(mlflow=endpoint)
        assert stack.ferretdb is not None
        etl_url = None
        if endpoint:
            stack.register_model(seed=1)
            ours = stack.start_ours()
            etl = stack.start_etl(serving_url=ours.url, database=DATABASE)
            etl_url = etl.url
        with stack.ferretdb.client(socketTimeoutMS=600_000) as client:
            variants = ["ours-repository", "ours-2-threads", "original"] + (["ours-endpoint"] if endpoint else [])
            for run_index in range(runs):
                for variant in variants:
                    collection = f"{variant.replace('-', '_')}_{run_index}"
                    meter = CpuMeter({"ferretdb": [stack.ferretdb.pid]}).start()
                    load = loadavg()[0]
                    started = time.perf_counter()
                    if variant == "ours-repository":
                        stored = ours_repository(client, frame, collection)
                    elif variant == "ours-2-threads":
                        stored = ours_repository(client, frame, collection, threads=2)
                    elif variant == "original":
                        stored = original(client, frame, collection)
                    else:
                        stored = ours_endpoint(etl_url, frame)
                    seconds = time.perf_counter() - started
                    # Checked after the clock stops: a count is not part of ingesting (FerretDB's count scans).
                    if variant != "ours-endpoint":
                        stored = collection_count(client[DATABASE][collection])
                    if stored != rows:
                        raise RuntimeError(f"{variant}: {stored} rows stored of {rows}")
                    record = append_result({
                        "bench": "ingest", "variant": variant, "rows": rows, "stored": stored, "run": run_index,
                        "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                        "ferretdb_cpu_s": meter.stop()["ferretdb"], "load_start": load, "load_end": loadavg()[0],
                        "tag": tag,
                    })
                    records.append(record)
                    log.info("%-16s %d rows in %.2f s: %.0f rows/s", variant, rows, seconds, rows / seconds)
    return records
