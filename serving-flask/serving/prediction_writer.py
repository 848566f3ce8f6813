"""Stores anonymous predictions in MongoDB in batches, off the request path, and flushes on shutdown.

A request only appends its arrays to an in-memory deque (microseconds); a thread packs what a flush holds into
buckets (consecutive anonymous requests of one model merged, :func:`mlstack_core.predictions.merge_batches`, up
to ``FLUSH_CHUNK_ROWS`` rows each; labelled rows stay one document per row) and writes them with
``insert_many`` every ``PREDICTION_FLUSH_SECONDS``, or at once when a full call's worth (``FLUSH_CHUNK_ROWS``)
is waiting, so under load it writes back to back instead of sleeping while the buffer fills (a fixed pause
after each flush held fast batch traffic at the buffer's bound: rows dropped while FerretDB had room to spare);
at most ``FLUSH_CHUNK_ROWS`` rows per call, so one
call stays well inside the socket timeout even with a backlog (a call that times out while the server goes on
writing, then sent again with more, is how a slow FerretDB fell ever further behind). Each document's ``_id``
is fixed when the thread first builds it and kept while it waits for a retry, so a flush that timed out after
the server wrote it stores nothing twice when it is sent again. On SIGTERM Gunicorn's worker_exit hook calls
:meth:`close`, which writes what is left. Every count is in predicted rows, whatever the layout.

Best effort by design: what the bounded buffer drops, what MongoDB refuses and what is still buffered when a
worker dies or the shutdown budget runs out is lost, and every such row is counted in
``serving_predictions_dropped_total`` (alert ``PredictionsDropped``) except those of a killed worker. ETL rows
never go through here: serving stores them before it answers (:mod:`serving.services`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.errors import PyMongoError

from mlstack_core.predictions import (
    PredictionBatch,
    PredictionsRepository,
    batch_documents,
    document_rows,
    is_packable,
    merge_batches,
)

logger = logging.getLogger(__name__)

# While the buffer overflows (MongoDB down or slower than the request rate), one log line per this many seconds
# sums up the drops; the counter (serving_predictions_dropped_total) counts every one.
DROP_LOG_SECONDS = 10.0
# Rows per insert_many at most (a call of 10,000 one-row documents takes FerretDB on SQLite about 0.5 s).
FLUSH_CHUNK_ROWS = 10_000


@dataclass
class _Queued:
    """A batch waiting in the buffer, with its documents once the writer thread has built them."""

    batch: PredictionBatch
    docs: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.batch)


class PredictionWriter:
    """Buffered, batched, shutdown-safe writer of prediction documents."""

    def __init__(
        self,
        repository: Callable[[], PredictionsRepository],
        *,
        flush_seconds: float,
        max_buffered_rows: int,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_buffered: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._flush_seconds = flush_seconds
        self._max_rows = max_buffered_rows
        self._queue: collections.deque[_Queued] = collections.deque()
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
        self._in_flight: list[_Queued] = []

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self._buffered_rows

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._loop, name="prediction-writer", daemon=True)
        self._thread.start()

    def add(self, batch: PredictionBatch) -> None:
        """Queue a request's predictions (never blocks on MongoDB)."""
        dropped = 0
        with self._lock:
            self._queue.append(_Queued(batch))
            self._buffered_rows += len(batch)
            if self._buffered_rows >= FLUSH_CHUNK_ROWS and not self._wake.is_set():
                self._wake.set()  # a full call is waiting: write now, not at the end of the interval
            overflow = self._buffered_rows - self._max_rows
            # Bounded memory while MongoDB is down: the oldest predictions go first, counted and logged.
            while overflow > 0 and self._queue:
                old = self._queue.popleft()
                self._buffered_rows -= len(old)
                overflow -= len(old)
                dropped += len(old)
            if dropped:
                self._count_drops(dropped)
                summary = self._drop_summary_due()
        if dropped:
            self._on_dropped(dropped)
            self._log_drops(summary)

    def _count_drops(self, rows: int) -> None:
        # Caller holds the lock.
        self.dropped += rows
        self._unlogged_drops += rows

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

    def _take(self) -> list[_Queued]:
        with self._lock:
            batches = list(self._queue)
            self._queue.clear()
            self._buffered_rows = 0
        return batches

    def _put_back(self, entries: list[_Queued]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(entries))
            self._buffered_rows += sum(len(e) for e in entries)

    def flush(self) -> bool:
        """Write everything buffered now; False (and kept for later, same _ids) when MongoDB fails."""
        entries = _packed(self._take())
        if not entries:
            return True
        with self._lock:
            self._in_flight = entries  # close() counts them if this write is still stuck when shutdown ends
        try:
            return self._write(entries)
        finally:
            with self._lock:
                self._in_flight = []

    def _write(self, entries: list[_Queued]) -> bool:
        """Write entries in order, in calls of at most FLUSH_CHUNK_ROWS rows; on a failure the entries not
        written yet (that call's and the later ones) go back to the front of the queue."""
        start = 0
        while start < len(entries):
            end, rows = start, 0
            while end < len(entries) and (end == start or rows + len(entries[end]) <= FLUSH_CHUNK_ROWS):
                rows += len(entries[end])
                end += 1
            with self._lock:
                self._in_flight = entries[start:]  # what close() counts as lost if this call is still stuck
            if not self._write_chunk(entries[start:end]):
                self._put_back(entries[start:])
                return False
            start = end
        return True

    def _write_chunk(self, entries: list[_Queued]) -> bool:
        for entry in entries:
            if entry.docs is None:
                entry.docs = batch_documents(entry.batch)  # the _ids are fixed from here on
        docs = [doc for entry in entries for doc in entry.docs or ()]
        rows = sum(len(entry) for entry in entries)
        try:
            result = self._repository().insert(docs)
        except PyMongoError as exc:
            # Some documents may be written already; the retry sends the same _ids, so they are stored once.
            logger.warning("storing %d predictions failed, will retry: %s", rows, exc)
            return False
        refused = sum(document_rows(docs[error["index"]]) for error in result.refused)
        if refused:
            with self._lock:
                self._count_drops(refused)
            self._on_dropped(refused)
            logger.error(
                "MongoDB refused %d of %d predictions; they are not stored (counted in "
                "serving_predictions_dropped_total): %s", refused, rows, result.refused[:3],
            )
        self.written += rows - refused
        self._on_written(rows - refused)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_seconds)  # set early by add() on a backlog, and by close()
            self._wake.clear()
            if self._stop.is_set():
                break  # close() writes what is left
            try:
                self.flush()
            except Exception:
                logger.exception("prediction writer failed")
            self._on_buffered(self._buffered_rows)
            self.log_pending_drops()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left, retrying for up to ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self._take()
        if self._thread is not None and self._thread.is_alive():
            # The thread's own write is still waiting on MongoDB: the process exits before it ends, so its rows
            # are lost too (counted as dropped even if the database answers in the last moment).
            with self._lock:
                left += self._in_flight
        if left:
            lost = sum(len(entry) for entry in left)
            with self._lock:
                self._count_drops(lost)
            self._on_dropped(lost)
            logger.error("shutdown: %d predictions could not be stored (counted as dropped)", lost)


def _packed(entries: list[_Queued]) -> list[_Queued]:
    """Consecutive packable entries of one model, not built yet, merged into one (up to FLUSH_CHUNK_ROWS rows):
    one bucket document each. Entries built before (a retry) keep their documents, so their _ids."""
    out: list[_Queued] = []
    run: list[_Queued] = []
    run_rows = 0

    def close() -> None:
        if len(run) > 1:
            out.append(_Queued(merge_batches([entry.batch for entry in run])))
        else:
            out.extend(run)
        run.clear()

    for entry in entries:
        mergeable = entry.docs is None and is_packable(entry.batch)
        if not (mergeable and run and entry.batch.model == run[0].batch.model
                and run_rows + len(entry) <= FLUSH_CHUNK_ROWS):
            close()
            run_rows = 0
        if mergeable:
            run.append(entry)
            run_rows += len(entry)
        else:
            out.append(entry)
    close()
    return out
