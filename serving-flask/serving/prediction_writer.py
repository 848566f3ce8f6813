"""Stores predictions in MongoDB in batches, off the request path, and flushes on shutdown.

A request only appends its arrays to an in-memory deque (microseconds); a thread turns them into documents
and writes them with ``insert_many`` every ``PREDICTION_FLUSH_SECONDS``. Forwarded ETL rows carry their row
id as the document id, so a retried or backfilled batch is stored once (duplicate keys are ignored).
On SIGTERM Gunicorn's worker_exit hook calls :meth:`close`, which writes what is left.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError

from mlstack_core.data.generator import FEATURES

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# While the buffer overflows (MongoDB down or slower than the request rate), one log line per this many seconds
# sums up the drops; the counter (serving_predictions_dropped_total) counts every one.
DROP_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class PendingBatch:
    """One request's predictions, kept as arrays until the writer thread builds documents."""

    features: np.ndarray
    predictions: np.ndarray
    model: dict[str, Any]
    request_id: str | None
    ids: list[str] | None
    created_at: dt.datetime
    quality: list[int | None] | None = None  # ground truth sent along (ETL rows), for live error monitoring


def _doc_id(row_id: str) -> Any:
    return ObjectId(row_id) if ObjectId.is_valid(row_id) else row_id


def batch_documents(batch: PendingBatch) -> list[dict[str, Any]]:
    """The MongoDB documents of a batch: inputs by feature name, prediction, model version, request id."""
    docs = []
    rows = batch.features.tolist()
    preds = batch.predictions.tolist()
    for i, (row, pred) in enumerate(zip(rows, preds, strict=True)):
        doc = {
            "inputs": dict(zip(FEATURES, row, strict=True)),
            "prediction": pred,
            "model_name": batch.model["name"],
            "model_version": batch.model["version"],
            "run_id": batch.model["run_id"],
            "request_id": batch.request_id,
            "created_at": batch.created_at,
        }
        if batch.ids is not None:
            doc["_id"] = _doc_id(batch.ids[i])
            doc["row_id"] = batch.ids[i]
        if batch.quality is not None and batch.quality[i] is not None:
            doc["quality"] = batch.quality[i]
        docs.append(doc)
    return docs


class PredictionWriter:
    """Buffered, batched, shutdown-safe writer of prediction documents."""

    def __init__(
        self,
        collection: Callable[[], Collection],
        *,
        flush_seconds: float,
        max_buffered_rows: int,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_buffered: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collection = collection
        self._flush_seconds = flush_seconds
        self._max_rows = max_buffered_rows
        self._queue: collections.deque[PendingBatch] = collections.deque()
        self._buffered_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._on_buffered = on_buffered or (lambda n: None)
        self._clock = clock
        self._unlogged_drops = 0
        self._last_drop_log: float | None = None
        self.written = 0
        self.dropped = 0

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self._buffered_rows

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._loop, name="prediction-writer", daemon=True)
        self._thread.start()

    def add(self, batch: PendingBatch) -> None:
        """Queue a request's predictions (never blocks on MongoDB)."""
        dropped = 0
        with self._lock:
            self._queue.append(batch)
            self._buffered_rows += len(batch.predictions)
            overflow = self._buffered_rows - self._max_rows
            # Bounded memory while MongoDB is down: the oldest predictions go first, counted and logged.
            while overflow > 0 and self._queue:
                old = self._queue.popleft()
                self._buffered_rows -= len(old.predictions)
                overflow -= len(old.predictions)
                dropped += len(old.predictions)
            if dropped:
                self.dropped += dropped
                self._unlogged_drops += dropped
                summary = self._drop_summary_due()
        if dropped:
            self._on_dropped(dropped)
            self._log_drops(summary)

    def log_pending_drops(self) -> None:
        """Log the drops not logged yet once DROP_LOG_SECONDS have passed since the last line (the writer loop
        calls this, so the last drops of an overflow are reported even when no request drops any more)."""
        with self._lock:
            summary = self._drop_summary_due() if self._unlogged_drops else None
        self._log_drops(summary)

    def _drop_summary_due(self) -> tuple[int, float | None] | None:
        # Caller holds the lock. One error line per DROP_LOG_SECONDS while drops go on, not one per request
        # (that would flood the log exactly when MongoDB is in trouble): (drops to report, seconds they span).
        now = self._clock()
        if self._last_drop_log is not None and now - self._last_drop_log < DROP_LOG_SECONDS:
            return None
        count, self._unlogged_drops = self._unlogged_drops, 0
        since = None if self._last_drop_log is None else now - self._last_drop_log
        self._last_drop_log = now
        return count, since

    def _log_drops(self, summary: tuple[int, float | None] | None) -> None:
        if summary is None:
            return
        count, since = summary
        logger.error(
            "prediction buffer full (PREDICTION_BUFFER_MAX=%d rows): dropped the %d oldest unstored predictions%s; "
            "MongoDB is down or slower than the prediction rate (serving_predictions_dropped_total counts them)",
            self._max_rows, count, "" if since is None else f" in the last {since:.0f} s",
        )

    def _take(self) -> list[PendingBatch]:
        with self._lock:
            batches = list(self._queue)
            self._queue.clear()
            self._buffered_rows = 0
        return batches

    def _put_back(self, batches: list[PendingBatch]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(batches))
            self._buffered_rows += sum(len(b.predictions) for b in batches)

    def flush(self) -> bool:
        """Write everything buffered now; False (and kept for later) when MongoDB fails."""
        batches = self._take()
        if not batches:
            return True
        docs = [doc for batch in batches for doc in batch_documents(batch)]
        try:
            self._collection().insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others:
                logger.error("%d predictions were rejected by MongoDB: %s", len(others), others[:3])
        except PyMongoError as exc:
            logger.warning("storing %d predictions failed, will retry: %s", len(docs), exc)
            self._put_back(batches)
            return False
        self.written += len(docs)
        self._on_written(len(docs))
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self._flush_seconds)
            try:
                self.flush()
            except Exception:
                logger.exception("prediction writer failed")
            self._on_buffered(self._buffered_rows)
            self.log_pending_drops()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left, retrying for up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._buffered_rows:
            logger.error("shutdown: %d predictions could not be stored", self._buffered_rows)
