"""Unit tests of the prediction writer: bounded buffer, drop order and accounting, retries, shutdown flush.

The collection is a stand-in that keeps _ids unique like MongoDB (these test the buffer logic, through the
real PredictionsRepository); writing to a real MongoDB-protocol server is covered by the integration and e2e
suites (stored counts after load and after SIGTERM).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import pytest
from pymongo.errors import AutoReconnect, BulkWriteError

from mlstack_core.predictions import PredictionBatch, PredictionsRepository, document_rows, unpack_bucket
from serving import prediction_writer
from serving.prediction_writer import DROP_LOG_SECONDS, PredictionWriter

MODEL = {"name": "m", "version": "1", "run_id": "r"}


class FakeCollection:
    """insert_many(ordered=False) with unique _ids, as MongoDB does; raises what it is told to.

    ``error`` is raised before anything is written; ``error_after_write`` after the documents were written
    (a timeout that hit once the server had stored them).
    """

    def __init__(self) -> None:
        self.inserted: list[dict] = []
        self.error: Exception | None = None
        self.error_after_write: Exception | None = None
        self.calls: list[int] = []  # rows per insert_many call
        self.fail_call: int | None = None  # the call (0-based) that raises AutoReconnect before writing

    def insert_many(self, docs, ordered=True):
        self.calls.append(sum(document_rows(doc) for doc in docs))
        if self.error is not None:
            raise self.error
        if self.fail_call == len(self.calls) - 1:
            raise AutoReconnect("timed out")
        known = {doc["_id"] for doc in self.inserted}
        errors = []
        for index, doc in enumerate(docs):
            if doc["_id"] in known:
                errors.append({"index": index, "code": 11000, "errmsg": "duplicate key"})
            else:
                known.add(doc["_id"])
                self.inserted.append(doc)
        if self.error_after_write is not None:
            error, self.error_after_write = self.error_after_write, None
            raise error
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(docs) - len(errors)})


def stored_rows(collection: FakeCollection) -> list[float]:
    """The predictions stored, row by row, whatever the layout (a bucket holds a whole batch)."""
    return [p for doc in collection.inserted
            for p in (unpack_bucket(doc)[1].tolist() if "predictions" in doc else [doc["prediction"]])]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(tag: int, rows: int = 10, *, labelled: bool = False, model: dict | None = None) -> PredictionBatch:
    """A batch whose predictions are all `tag`, so the stored documents tell which batches survived; labelled
    (true quality sent by the ETL's token) it is stored one document per row, else packed."""
    return PredictionBatch(np.full((rows, 11), 1.0), np.full(rows, float(tag)), model or MODEL, f"req-{tag}",
                           dt.datetime.now(dt.UTC), quality=[6] * rows if labelled else None)


def make_writer(collection: FakeCollection, max_rows: int = 100, clock: Clock | None = None):
    counts = {"written": 0, "dropped": 0}
    repository = PredictionsRepository(collection)
    writer = PredictionWriter(
        lambda: repository, flush_seconds=60, max_buffered_rows=max_rows,
        on_written=lambda n: counts.__setitem__("written", counts["written"] + n),
        on_dropped=lambda n: counts.__setitem__("dropped", counts["dropped"] + n),
        clock=clock or Clock(),
    )
    return writer, counts


def test_overflow_drops_the_oldest_batches_and_counts_every_row():
    collection = FakeCollection()
    collection.error = AutoReconnect("down")
    writer, counts = make_writer(collection, max_rows=100)
    for tag in range(15):
        writer.add(batch(tag))
    assert writer.buffered_rows == 100
    assert writer.dropped == counts["dropped"] == 50
    assert writer.flush() is False  # MongoDB down: kept for later
    assert writer.buffered_rows == 100
    collection.error = None
    assert writer.flush() is True
    stored = stored_rows(collection)
    assert sorted(set(stored)) == [float(tag) for tag in range(5, 15)]  # the 5 oldest batches went
    assert stored == sorted(stored)  # put back in their order
    assert writer.written == counts["written"] == 100
    assert writer.buffered_rows == 0


@pytest.fixture
def clocked():
    """A writer (100 rows at most) on a clock the test moves."""
    clock = Clock()
    writer, _ = make_writer(FakeCollection(), max_rows=100, clock=clock)
    return writer, clock


def test_drops_are_logged_once_per_interval_with_their_sum(clocked, caplog):
    writer, clock = clocked
    with caplog.at_level(logging.ERROR, logger="serving.prediction_writer"):
        for tag in range(500):  # one-row traffic while MongoDB is down: 400 drops, one per request
            writer.add(batch(tag, rows=1))
        first = [r.getMessage() for r in caplog.records]
        assert len(first) == 1 and "dropped the 1 oldest" in first[0]
        clock.now += DROP_LOG_SECONDS / 2
        writer.add(batch(1000, rows=1))
        assert len(caplog.records) == 1  # still inside the interval
        clock.now += DROP_LOG_SECONDS
        writer.add(batch(1001, rows=1))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "dropped the 401 oldest" in messages[1]  # every drop after the first line, summed
    assert writer.dropped == 402


def test_pending_drop_summary_is_logged_by_the_writer_loop_once_the_interval_is_over(clocked, caplog):
    writer, clock = clocked
    with caplog.at_level(logging.ERROR, logger="serving.prediction_writer"):
        for tag in range(12):
            writer.add(batch(tag))  # 2 overflows: the first logged, the second pending
        assert len(caplog.records) == 1
        writer.log_pending_drops()  # what the loop does after each flush: nothing yet, inside the interval
        assert len(caplog.records) == 1
        clock.now += DROP_LOG_SECONDS + 1
        writer.log_pending_drops()
    assert len(caplog.records) == 2 and "dropped the 10 oldest" in caplog.records[1].getMessage()


def test_a_flush_retried_after_the_server_wrote_it_stores_each_prediction_once():
    collection = FakeCollection()
    writer, counts = make_writer(collection)
    writer.add(batch(1))
    collection.error_after_write = AutoReconnect("timed out")  # written, but the writer never heard back
    assert writer.flush() is False and writer.buffered_rows == 10
    writer.add(batch(2))
    assert writer.flush() is True  # the same _ids again: duplicates for batch 1, new documents for batch 2
    assert len(stored_rows(collection)) == 20 and len(collection.inserted) == 2  # one bucket per batch
    assert len({doc["_id"] for doc in collection.inserted}) == 2
    assert writer.written == counts["written"] == 20 and writer.dropped == 0


def test_documents_refused_by_mongodb_are_counted_as_dropped_not_written(caplog):
    collection = FakeCollection()
    writer, counts = make_writer(collection)
    for tag in range(10):
        writer.add(batch(tag, rows=1, labelled=True))  # labelled rows: a document each
    refused = [{"index": i, "code": 121, "errmsg": "Document failed validation"} for i in range(3)]
    collection.error = BulkWriteError({"writeErrors": refused, "nInserted": 7})
    with caplog.at_level(logging.ERROR, logger="serving.prediction_writer"):
        assert writer.flush() is True  # not retried: MongoDB would refuse them again
    assert writer.written == counts["written"] == 7
    assert writer.dropped == counts["dropped"] == 3
    assert "refused 3 of 10" in caplog.records[0].getMessage()


def test_a_refused_bucket_counts_every_row_it_holds():
    collection = FakeCollection()
    writer, counts = make_writer(collection)
    writer.add(batch(1, rows=1, labelled=True))
    writer.add(batch(2, rows=10))
    collection.error = BulkWriteError({"writeErrors": [{"index": 1, "code": 121, "errmsg": "too large"}],
                                       "nInserted": 1})
    assert writer.flush() is True
    assert writer.written == counts["written"] == 1
    assert writer.dropped == counts["dropped"] == 10


def test_anonymous_predictions_of_a_flush_are_packed_per_model_in_order():
    collection = FakeCollection()
    writer, counts = make_writer(collection)
    other = {"name": "m", "version": "2", "run_id": "r2"}
    for entry in (batch(1, rows=1), batch(2, rows=1), batch(3, rows=3), batch(4, rows=1, model=other),
                  batch(5, rows=2, labelled=True), batch(6, rows=1), batch(7, rows=1)):
        writer.add(entry)
    assert writer.flush() is True
    kinds = [(doc.get("request_ids"), doc.get("model_version")) if "predictions" in doc else doc["request_id"]
             for doc in collection.inserted]
    # One bucket per run of one model's anonymous requests; labelled rows one document each, in their place.
    assert kinds == [(["req-1", "req-2", "req-3"], "1"), (["req-4"], "2"), "req-5", "req-5", (["req-6", "req-7"], "1")]
    assert [doc["request_rows"] for doc in collection.inserted if "predictions" in doc] == [[1, 1, 3], [1], [1, 1]]
    assert stored_rows(collection) == [1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0, 6.0, 7.0]
    assert len({doc["_id"] for doc in collection.inserted}) == 5
    assert all("row_id" not in doc and "quality" not in doc for doc in collection.inserted if "predictions" in doc)
    assert writer.written == counts["written"] == 10


def test_a_backlog_is_written_in_bounded_calls_and_a_failed_call_keeps_the_rest_in_order(monkeypatch):
    monkeypatch.setattr(prediction_writer, "FLUSH_CHUNK_ROWS", 25)
    collection = FakeCollection()
    writer, counts = make_writer(collection, max_rows=1000)
    for tag in range(5):
        writer.add(batch(tag))  # 5 batches of 10 rows
    writer.add(batch(5, rows=40))  # larger than a call: written alone
    collection.fail_call = 1
    assert writer.flush() is False
    assert collection.calls == [20, 20]  # the first call went through, the second failed
    assert writer.written == counts["written"] == 20 and writer.buffered_rows == 70
    assert writer.flush() is True
    assert collection.calls[2:] == [20, 10, 40]
    assert stored_rows(collection) == sorted(stored_rows(collection))  # batches stored in the order they came
    assert writer.written == 90 and writer.dropped == 0 and writer.buffered_rows == 0


def test_a_full_call_waiting_is_written_at_once_not_at_the_end_of_the_interval(monkeypatch):
    # Under load a fixed pause after each flush let the buffer reach its bound and drop rows while MongoDB had
    # room to spare: a backlog of one call's worth wakes the writer (the interval here is 60 s).
    monkeypatch.setattr(prediction_writer, "FLUSH_CHUNK_ROWS", 25)
    collection = FakeCollection()
    writer, counts = make_writer(collection, max_rows=1000)
    writer.start()
    try:
        writer.add(batch(1))
        writer.add(batch(2))
        time.sleep(0.3)
        assert collection.calls == []  # 20 rows: less than a call, they wait for the interval
        writer.add(batch(3))  # 30 rows waiting
        deadline = time.monotonic() + 10
        while writer.written < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.written == counts["written"] == 30 and writer.buffered_rows == 0
        assert stored_rows(collection) == [1.0] * 10 + [2.0] * 10 + [3.0] * 10
    finally:
        writer.close(timeout=1)


@pytest.mark.parametrize("recovers", [True, False])
def test_close_writes_what_is_left_and_says_what_it_could_not(recovers, caplog):
    collection = FakeCollection()
    writer, _ = make_writer(collection)
    writer.start()
    writer.add(batch(1))
    writer.add(batch(2))
    if not recovers:
        collection.error = AutoReconnect("down")
    with caplog.at_level(logging.ERROR, logger="serving.prediction_writer"):
        writer.close(timeout=0.5)
    if recovers:
        assert len(stored_rows(collection)) == 20 and writer.buffered_rows == 0
        assert not caplog.records
    else:
        assert writer.dropped == 20  # what shutdown could not store is counted as dropped
        assert "20 predictions could not be stored" in caplog.records[-1].getMessage()
