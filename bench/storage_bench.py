"""What storing and reading the project's documents costs the database, per FerretDB backend and document layout.

Backends, each its own servers, taking turns within every run (the order flips from one run to the next):

- ``sqlite``: FerretDB on SQLite files (the native default);
- ``postgresql``: FerretDB on a PostgreSQL cluster of its own (Debian's PostgreSQL 15, installed by
  ``bench/tools.sh postgresql`` on first use).

Workloads, each with the project's own functions, one client, one call at a time:

- ``serving-writes``: predictions stored as serving stores them (``PredictionsRepository.insert``, an unordered
  ``insert_many``, into a collection with the monitor's ``created_at`` index), in three layouts:
  ``per-row`` (1,000-row requests, ``row_documents``: one document per row, one request per insert),
  ``one-row`` (one-row requests, one document each, 500 per insert: a writer flush before it packed them),
  ``one-row-packed`` (the same 500 one-row requests packed into one bucket per insert, as serving stores them),
  ``arrays``
  (one document per 1,000-row request, one array per feature, built here: a queryable bucket) and ``packed``
  (what serving stores for an anonymous 1,000-row request: one bucket, the numbers packed, ``bucket_document``);
- ``etl-ingest``: 1,000-row batches through ``RowsRepository.insert_batch`` with pending marks (the ETL's run:
  two documents per row);
- ``training-read``: the training service's read of every labelled row (``training.data.load_training_data``)
  of a collection filled beforehand.

Figures per run: rows/s of the client, and CPU (utime+stime, ended children included) of the database's process
trees per 1,000 rows: FerretDB, and for the PostgreSQL backend the postmaster with every backend it forked. A
PostgreSQL write's measurement ends with a CHECKPOINT (after the clock stops): the data-file writes PostgreSQL
defers are charged to the rows that caused them, as SQLite's WAL checkpoints, which run inside the inserts, are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, CpuMeter, append_result, loadavg
from devstack.servers import FerretDB, PostgreSQL, postgresql_bin_dir, stop_all

log = logging.getLogger("bench")

DATABASE = "BENCH_STORAGE"
BACKENDS = ("sqlite", "postgresql")
BATCH_ROWS = 1000
FLUSH_DOCS = 500  # one-row documents per insert: what a writer flush holds at a few hundred requests/s
FILL_BATCH_ROWS = 10_000
MODEL = {"name": "sk-learn-linear-reg-model", "version": "3", "run_id": "0" * 32}


def ensure_postgresql() -> Path:
    """PostgreSQL's server binaries, installed by bench/tools.sh (Debian's package) when missing."""
    try:
        return postgresql_bin_dir()
    except FileNotFoundError:
        log.info("PostgreSQL not installed: bench/tools.sh postgresql")
        subprocess.run([str(BENCH_DIR / "tools.sh"), "postgresql"], check=True, timeout=1800)
        return postgresql_bin_dir()


# ------------------------------------------------------------------ data


def _frame(rows: int, seed: int) -> Any:
    from mlstack_core.data.generator import generate_frame

    return generate_frame(rows, seed=seed)


def _prediction_batch(features: np.ndarray, request_id: str) -> Any:
    from mlstack_core.data.generator import FEATURES
    from mlstack_core.predictions import PredictionBatch

    return PredictionBatch(
        features=features, predictions=features @ np.linspace(0.1, 1.1, len(FEATURES)), model=MODEL,
        request_id=request_id, created_at=dt.datetime.now(dt.UTC),
    )


def request_batches(batches: int, seed: int = 0) -> list[Any]:
    """`batches` 1,000-row prediction requests."""
    from mlstack_core.data.generator import FEATURES

    out = []
    for i in range(batches):
        features = _frame(BATCH_ROWS, seed=seed + i)[list(FEATURES)].to_numpy(dtype=np.float64)
        out.append(_prediction_batch(features, uuid.uuid4().hex))
    return out


def per_row(batches: list[Any]) -> list[list[dict[str, Any]]]:
    """Serving's per-row documents (``row_documents``) of 1,000-row requests, one insert per request."""
    from mlstack_core.predictions import row_documents

    return [row_documents(batch) for batch in batches]


def _one_row_requests(batches: list[Any]) -> list[Any]:
    """Every row of the batches as a one-row request of its own."""
    return [_prediction_batch(batch.features[i:i + 1], uuid.uuid4().hex)
            for batch in batches for i in range(len(batch))]


def one_row(batches: list[Any]) -> list[list[dict[str, Any]]]:
    """The same rows sent as one-row requests, one document per row (``row_documents``, serving's layout for them
    before it packed them), FLUSH_DOCS documents per insert."""
    from mlstack_core.predictions import row_documents

    docs = [doc for request in _one_row_requests(batches) for doc in row_documents(request)]
    return [docs[i:i + FLUSH_DOCS] for i in range(0, len(docs), FLUSH_DOCS)]


def one_row_packed(batches: list[Any]) -> list[list[dict[str, Any]]]:
    """The same one-row requests as serving's writer stores them: a flush of FLUSH_DOCS requests packed into one
    bucket (``merge_batches``, ``batch_documents``), one insert per flush."""
    from mlstack_core.predictions import batch_documents, merge_batches

    requests = _one_row_requests(batches)
    return [batch_documents(merge_batches(requests[i:i + FLUSH_DOCS])) for i in range(0, len(requests), FLUSH_DOCS)]


def packed(batches: list[Any]) -> list[list[dict[str, Any]]]:
    """What serving stores for an anonymous 1,000-row request: one bucket, inputs and predictions packed
    (``batch_documents`` -> ``bucket_document``), one insert per request."""
    from mlstack_core.predictions import batch_documents

    docs = [batch_documents(batch) for batch in batches]
    assert all(len(d) == 1 and "columns" in d[0] for d in docs), "serving no longer packs anonymous batches"
    return docs


def arrays(batches: list[Any]) -> list[list[dict[str, Any]]]:
    """One document per 1,000-row request with the inputs as one array per feature (built here: the queryable
    bucket serving does not use, measured to show what packing saves)."""
    from mlstack_core.data.generator import FEATURES

    return [[{
        "inputs": {name: batch.features[:, i].tolist() for i, name in enumerate(FEATURES)},
        "predictions": batch.predictions.tolist(),
        "rows": len(batch.predictions),
        "model_name": batch.model["name"], "model_version": batch.model["version"], "run_id": batch.model["run_id"],
        "request_id": batch.request_id, "created_at": batch.created_at,
    }] for batch in batches]


LAYOUTS: dict[str, Callable[[list[Any]], list[list[dict[str, Any]]]]] = {
    "per-row": per_row, "one-row": one_row, "one-row-packed": one_row_packed, "arrays": arrays, "packed": packed,
}


@dataclasses.dataclass(frozen=True)
class RowBatch:
    """Rows as the ETL stores them: features in FEATURES order and quality."""

    features: np.ndarray
    quality: list[int | None]


def row_batches(rows: int, batch_rows: int, seed: int) -> list[RowBatch]:
    """The rows of a generated frame, cut into batches."""
    from mlstack_core.data.generator import FEATURES, TARGET

    frame = _frame(rows, seed=seed)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    quality = frame[TARGET].astype(int).tolist()
    return [RowBatch(features[i:i + batch_rows], quality[i:i + batch_rows]) for i in range(0, rows, batch_rows)]


# ------------------------------------------------------------------ servers


@dataclasses.dataclass
class Backend:
    """One FerretDB and, for the PostgreSQL backend, its PostgreSQL."""

    name: str
    ferretdb: FerretDB
    postgresql: PostgreSQL | None = None

    def roots(self) -> dict[str, list[int]]:
        """Root pids of the database's process trees, by server."""
        servers = {"ferretdb": self.ferretdb, "postgresql": self.postgresql}
        return {name: [server.pid] for name, server in servers.items() if server is not None and server.pid}

    def settle(self) -> None:
        """Write out what the database deferred (PostgreSQL: a CHECKPOINT); SQLite defers nothing past a write."""
        if self.postgresql is not None:
            self.postgresql.psql("CHECKPOINT")

    def data_bytes(self) -> int:
        """Bytes of the backend's data directory."""
        path = self.postgresql.data_dir if self.postgresql is not None else self.ferretdb.data_dir
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Backends:
    """The backends asked for, started in a work dir of their own (mode 0711: PostgreSQL's user must reach it)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mlstack-bench-storage-"))
        self.workdir.chmod(0o711)
        self.names = names
        self.backends: dict[str, Backend] = {}
        self.start_seconds: dict[str, dict[str, float | None]] = {}
        self._started: list[Any] = []

    def __enter__(self) -> Backends:
        try:
            for name in self.names:
                self.backends[name] = self._start(name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, name: str) -> Backend:
        password = secrets.token_urlsafe(18)
        postgresql = None
        url = None
        if name == "postgresql":
            ensure_postgresql()
            postgresql = PostgreSQL(self.workdir / "postgresql")
            postgresql.start()
            self._started.append(postgresql)
            url = postgresql.uri
        ferretdb = FerretDB(self.workdir / f"ferretdb-{name}", username="bench", password=password, backend=name,
                            postgresql_url=url)
        ferretdb.start()
        self._started.append(ferretdb)
        self.start_seconds[name] = {"ferretdb_start_s": ferretdb.start_seconds,
                                    "postgresql_first_start_s": postgresql.start_seconds if postgresql else None}
        return Backend(name, ferretdb, postgresql)

    def __exit__(self, *exc: object) -> None:
        stop_all(self._started)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------ measuring


def _measure(backend: Backend, work: Callable[[], int], *, settle: bool) -> dict[str, Any]:
    """Run work() (returns rows) under the CPU meter; with settle, the backend settles before the meter stops."""
    meter = CpuMeter(backend.roots()).start()
    load = loadavg()[0]
    started = time.perf_counter()
    rows = work()
    seconds = time.perf_counter() - started
    if settle:
        backend.settle()
    cpu = meter.stop()
    db_cpu = sum(cpu.values())
    return {
        "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
        "ferretdb_cpu_s": cpu.get("ferretdb", 0.0), "postgresql_cpu_s": cpu.get("postgresql"),
        "db_cpu_s": round(db_cpu, 3),
        "db_cpu_ms_per_1000_rows": round(1000 * db_cpu / rows * 1000, 2),
        "ferretdb_cpu_ms_per_1000_rows": round(1000 * cpu.get("ferretdb", 0.0) / rows * 1000, 2),
        "load_start": load, "load_end": loadavg()[0],
    }


def serving_writes(db: Any, collection: str, inserts: list[list[dict[str, Any]]], layout: str) -> Callable[[], int]:
    """The serving writer's inserts (PredictionsRepository.insert) into a fresh collection, made with its index
    before the clock starts."""
    from mlstack_core.predictions import PredictionsRepository, document_rows

    repo = PredictionsRepository(db[collection])
    repo.ensure_indexes()

    def work() -> int:
        rows = 0
        for docs in inserts:
            result = repo.insert(docs)
            if result.refused or result.written != len(docs):
                raise RuntimeError(f"{layout}: {result.written} of {len(docs)} written, refused {result.refused[:3]}")
            rows += sum(document_rows(doc) for doc in docs)  # a bucket holds "rows" rows
        return rows

    return work


def etl_ingest(db: Any, collection: str, batches: list[RowBatch]) -> Callable[[], int]:
    """The ETL's insert_batch (rows and pending marks) into a fresh collection with the ETL's indexes."""
    from mlstack_core.rows import RowsRepository, new_batch_id

    repo = RowsRepository(db[collection])
    repo.ensure_indexes()

    def work() -> int:
        for batch in batches:
            repo.insert_batch(batch.features, batch.quality, source="generator", batch_id=new_batch_id(), pending=True)
        return sum(len(batch.quality) for batch in batches)

    return work


def fill_training_rows(db: Any, collection: str, batches: list[RowBatch]) -> None:
    """The rows the training read finds (no pending marks: they were predicted long ago)."""
    from mlstack_core.rows import RowsRepository, new_batch_id

    repo = RowsRepository(db[collection])
    repo.ensure_indexes()
    for batch in batches:
        repo.insert_batch(batch.features, batch.quality, source="generator", batch_id=new_batch_id(), pending=False)


def training_read(db: Any, collection: str, expected: int) -> Callable[[], int]:
    """The training service's load of every labelled row."""
    from mlstack_core.rows import RowsRepository
    from training.data import SOURCE_MONGODB, load_training_data

    repo = RowsRepository(db[collection])

    def work() -> int:
        data = load_training_data(repo, min_rows=1, fallback_rows=1, seed=0, read_timeout_seconds=600)
        if data.source != SOURCE_MONGODB or data.rows != expected:
            raise RuntimeError(f"training read {data.rows} rows from {data.source}, expected {expected}: {data.reason}")
        return data.rows

    return work


def _order(backends: tuple[str, ...], run_index: int) -> Iterator[str]:
    """The backends in turn, the order flipped every other run (neither always goes first)."""
    return iter(backends if run_index % 2 == 0 else tuple(reversed(backends)))


def run(*, batches: int = 50, read_rows: int = 100_000, runs: int = 3, backends: tuple[str, ...] = BACKENDS,
        tag: str = "") -> list[dict[str, Any]]:
    """Every workload on every backend, backends taking turns, `runs` times; one record per measurement."""
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    records = []
    requests = request_batches(batches)
    etl_rows = row_batches(batches * BATCH_ROWS, BATCH_ROWS, seed=1000)
    with Backends(backends) as servers:
        clients = {name: b.ferretdb.client(socketTimeoutMS=1_200_000) for name, b in servers.backends.items()}
        try:
            fill_batches = row_batches(read_rows, FILL_BATCH_ROWS, seed=2000)
            for name, backend in servers.backends.items():
                began = time.perf_counter()
                fill_training_rows(clients[name][DATABASE], "training_rows", fill_batches)
                backend.settle()
                log.info("%s: %d training rows stored in %.1f s", name, read_rows, time.perf_counter() - began)
            for run_index in range(runs):
                # Documents are built anew each run (fresh _ids), outside the measurement: only the database counts.
                inserts = {layout: make(requests) for layout, make in LAYOUTS.items()}
                steps: list[tuple[str, str]] = [("serving-writes", layout) for layout in LAYOUTS]
                steps += [("etl-ingest", "rows"), ("training-read", "rows")]
                for workload, layout in steps:
                    for name in _order(tuple(servers.backends), run_index):
                        backend = servers.backends[name]
                        db = clients[name][DATABASE]
                        collection = f"{workload}_{layout}_{run_index}".replace("-", "_")
                        if workload == "serving-writes":
                            work = serving_writes(db, collection, inserts[layout], layout)
                        elif workload == "etl-ingest":
                            work = etl_ingest(db, collection, etl_rows)
                        else:
                            work = training_read(db, "training_rows", read_rows)
                        figures = _measure(backend, work, settle=workload != "training-read")
                        record = append_result({"bench": "storage-layout", "workload": workload, "backend": name,
                                                "layout": layout, "run": run_index, **figures, "tag": tag})
                        records.append(record)
                        log.info("%-14s %-7s %-10s %7d rows in %6.2f s: %8.0f rows/s, DB CPU %6.1f ms per 1,000 "
                                 "rows", workload, layout, name, record["rows"], record["seconds"],
                                 record["rows_per_s"], record["db_cpu_ms_per_1000_rows"])
        finally:
            for client in clients.values():
                client.close()
        for name, backend in servers.backends.items():
            # A restart with the run's data in place: what a native stack's start costs once it holds rows.
            backend.ferretdb.stop()
            if backend.postgresql is not None:
                backend.postgresql.restart()
            backend.ferretdb.start()
            restarts = {"ferretdb_restart_s": backend.ferretdb.start_seconds,
                        "postgresql_restart_s": backend.postgresql.start_seconds if backend.postgresql else None}
            records.append(append_result({
                "bench": "storage-backend", "backend": name, **servers.start_seconds[name], **restarts,
                "data_mib": round(backend.data_bytes() / 2**20, 1), "training_rows": read_rows, "runs": runs,
                "postgresql": _postgresql_version() if name == "postgresql" else None, "tag": tag,
            }))
    return records


def _postgresql_version() -> str | None:
    try:
        out = subprocess.run([str(postgresql_bin_dir() / "postgres"), "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
