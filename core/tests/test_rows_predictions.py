"""Pending marks, prediction documents and the orphan sweep against a real FerretDB (every query they rely on).

The invariant under test: every row has a pending mark or a stored prediction; a mark goes only once the
prediction is stored; the sweep re-marks rows found with neither.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from bson import ObjectId

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.predictions import (
    FEW_IDS,
    PredictionBatch,
    PredictionsRepository,
    batch_documents,
    unpack_bucket,
)
from mlstack_core.rows import ORPHAN_GRACE, RowsRepository, new_batch_id

pytestmark = pytest.mark.integration

MODEL = {"name": "m", "version": "3", "run_id": "r"}
def later() -> dt.datetime:
    """A moment by which every row written so far is older than the grace period (taken at the call: a module-level
    constant goes stale when the test runs more than a minute after import, as in a loaded full suite)."""
    return dt.datetime.now(dt.UTC) + ORPHAN_GRACE + dt.timedelta(minutes=1)


@pytest.fixture
def db(fresh_db):
    return fresh_db


@pytest.fixture
def repo(db) -> RowsRepository:
    return RowsRepository(db["rows"])


def insert(repo: RowsRepository, rows: int, *, seed: int = 0, pending: bool = True) -> list[ObjectId]:
    frame = generate_frame(rows, seed=seed)
    return repo.insert_batch(frame[list(FEATURES)].to_numpy(dtype=np.float64), frame[TARGET].tolist(),
                             source="test", batch_id=new_batch_id(), pending=pending)


def store_predictions(repo: RowsRepository, ids: list[ObjectId]):
    """What serving does for the ETL's rows: documents under the row ids."""
    batch = PredictionBatch(np.ones((len(ids), len(FEATURES))), np.full(len(ids), 5.5), MODEL, "req",
                            dt.datetime.now(dt.UTC), row_ids=[str(i) for i in ids], quality=[6] * len(ids))
    return repo.predictions.insert(batch_documents(batch))


def marks(repo: RowsRepository) -> set:
    return {doc["_id"] for doc in repo.pending_col.find({}, {"_id": 1})}


def test_row_predictions_are_stored_under_the_row_id_once(repo):
    ids = insert(repo, 3)
    first = store_predictions(repo, ids[:2])
    assert (first.written, first.duplicates, first.refused) == (2, 0, [])
    again = store_predictions(repo, ids)  # a retry or backfill: the stored two are duplicates, not copies
    assert (again.written, again.duplicates, again.stored) == (1, 2, 3)
    assert repo.predictions.col.count_documents({}) == 3
    doc = repo.predictions.col.find_one({"_id": ids[0]})
    assert doc["row_id"] == str(ids[0]) and doc[TARGET] == 6 and set(doc["inputs"]) == set(FEATURES)
    assert repo.predictions.stored_ids([*ids, ObjectId()]) == set(ids)


@pytest.mark.parametrize("rows", [4, FEW_IDS + 4])  # looked up one find each, then with one $in
def test_marks_are_cleared_only_for_rows_whose_prediction_is_stored(repo, rows):
    ids = insert(repo, rows)
    store_predictions(repo, ids[:-1])
    cleared, missing = repo.mark_predicted(ids)
    assert cleared == rows - 1 and missing == [ids[-1]]
    assert marks(repo) == {ids[-1]}
    statuses = [row["prediction_status"] for row in repo.latest(rows)]
    assert statuses.count("done") == rows - 1 and statuses.count("pending") == 1


def test_marks_without_rows_are_skipped_and_deleted_once_stale(repo):
    ids = insert(repo, 2)
    now = dt.datetime.now(dt.UTC)
    stale, fresh = ObjectId(), ObjectId()  # marks of inserts that never wrote their rows
    repo.pending_col.insert_many([
        {"_id": stale, "datetime_": now - ORPHAN_GRACE - dt.timedelta(minutes=1), "batch_id": "gone"},
        {"_id": fresh, "datetime_": now, "batch_id": "in-flight"},
    ])
    backlog = repo.pending(limit=10, now=now)
    assert sorted(row["_id"] for row in backlog) == sorted(ids)
    assert marks(repo) == {*ids, fresh}  # the stale one is gone; an insert in flight keeps its mark


def test_sweep_re_marks_rows_with_neither_mark_nor_prediction(repo):
    ids = insert(repo, 3)
    store_predictions(repo, ids[:1])
    repo.mark_predicted(ids[:1])  # ids[0]: predicted; ids[1]: pending
    repo.pending_col.delete_one({"_id": ids[2]})  # ids[2]: neither (a mark lost by older code or by hand)
    orphan = repo.col.insert_one({**{n: 1.0 for n in FEATURES}, "datetime_": dt.datetime.now(dt.UTC),
                                  "batch_id": "legacy", "source": "old"}).inserted_id  # a row written without a mark

    assert repo.sweep(limit=100).scanned == 0  # rows younger than the grace period may still be mid-insert
    result = repo.sweep(limit=100, now=later())
    assert (result.scanned, result.remarked) == (4, 2)
    assert marks(repo) == {ids[1], ids[2], orphan}
    assert repo.pending_col.find_one({"_id": orphan})["batch_id"] == "legacy"
    assert repo.sweep(limit=100, now=later()) == result.__class__(0, 0)  # behind the watermark: not scanned again


def test_sweep_walks_the_collection_in_bounded_slices(repo):
    ids = insert(repo, 5, pending=False)  # none marked, none predicted
    seen = [repo.sweep(limit=2, now=later()) for _ in range(4)]
    assert [(s.scanned, s.remarked) for s in seen] == [(2, 2), (2, 2), (1, 1), (0, 0)]
    assert marks(repo) == set(ids)
    assert {row["_id"] for row in repo.pending(limit=10)} == set(ids)  # the backfill sends them


def test_recent_windows_read_through_the_repository(db):
    predictions = PredictionsRepository(db["predictions"])
    predictions.ensure_indexes()
    now = dt.datetime.now(dt.UTC)
    old = PredictionBatch(np.zeros((2, len(FEATURES))), np.zeros(2), MODEL, None, now - dt.timedelta(hours=1))
    new = PredictionBatch(np.ones((3, len(FEATURES))), np.full(3, 7.0), MODEL, None, now, quality=[6, None, 8])
    predictions.insert(batch_documents(old) + batch_documents(new))
    inputs, predicted = predictions.recent_inputs(3)
    assert inputs.shape == (3, len(FEATURES)) and list(predicted) == [7.0] * 3
    predicted, quality = predictions.recent_labelled(10)
    assert sorted(quality) == [6.0, 8.0] and list(predicted) == [7.0, 7.0]


def test_an_anonymous_batch_is_one_bucket_and_the_windows_read_its_rows(db):
    predictions = PredictionsRepository(db["predictions"])
    predictions.ensure_indexes()
    now = dt.datetime.now(dt.UTC)
    features = np.arange(4 * len(FEATURES), dtype=np.float64).reshape(4, len(FEATURES))
    labelled = PredictionBatch(np.zeros((2, len(FEATURES))), np.zeros(2), MODEL, "a", now - dt.timedelta(hours=2),
                               quality=[5, 6])
    one_row = PredictionBatch(np.ones((1, len(FEATURES))), np.array([1.5]), MODEL, "b", now - dt.timedelta(hours=1))
    bucketed = PredictionBatch(features, np.array([6.0, 6.1, 6.2, 6.3]), MODEL, "c", now)
    docs = [*batch_documents(labelled), *batch_documents(one_row), *batch_documents(bucketed)]
    assert len(docs) == 4 and docs[-1]["rows"] == 4  # labelled per row, a one-row bucket, a bucket for the batch
    assert predictions.insert(docs).written == 4
    stored = db["predictions"].find_one({"request_ids": "c"})
    assert stored["columns"] == list(FEATURES) and stored["dtype"] == "<f8" and stored["rows"] == 4
    assert stored["request_rows"] == [4] and stored["created_at"].replace(tzinfo=dt.UTC) == now.replace(
        microsecond=now.microsecond // 1000 * 1000)
    inputs, predicted = unpack_bucket(stored)  # as stored by the server, read back through the wire protocol
    assert inputs.tolist() == features.tolist() and predicted.tolist() == [6.0, 6.1, 6.2, 6.3]
    reordered = {**stored, "columns": stored["columns"][::-1],
                 "inputs": np.ascontiguousarray(features[:, ::-1]).astype("<f8").tobytes()}
    assert unpack_bucket(reordered)[0].tolist() == features.tolist()  # columns are read by name
    for broken in ({"dtype": ">f4"}, {"rows": 5}, {"inputs": b"\0" * 7}, {"columns": None}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            unpack_bucket({**stored, **broken})

    inputs, predicted = predictions.recent_inputs(2)  # the newest rows: the bucket's last two, newest first
    assert inputs.tolist() == features[:1:-1].tolist() and predicted.tolist() == [6.3, 6.2]
    inputs, predicted = predictions.recent_inputs(6)  # across layouts, newest first
    assert predicted.tolist() == [6.3, 6.2, 6.1, 6.0, 1.5, 0.0] and inputs[4].tolist() == [1.0] * len(FEATURES)
    predicted, quality = predictions.recent_labelled(10)  # buckets carry no quality
    assert quality.tolist() == [5.0, 6.0] and predicted.tolist() == [0.0, 0.0]
    assert predictions.stored_rows() == 7


class _Crash(BaseException):
    """The process dying: no except clause of the repository runs (it cleans up only after PyMongoError)."""


class _RowsInsertDies:
    """The rows collection of a process killed right before it inserts the rows."""

    def __init__(self, col) -> None:
        self._col = col

    def insert_many(self, docs, ordered=True):
        raise _Crash

    def __getattr__(self, name):
        return getattr(self._col, name)


def test_a_crash_between_the_two_inserts_leaves_marks_never_a_row_without_one(repo):
    repo.col = _RowsInsertDies(repo.col)
    with pytest.raises(_Crash):
        insert(repo, 3)
    repo.col = repo.col._col
    assert repo.col.count_documents({}) == 0 and len(marks(repo)) == 3  # marks went first
    assert repo.pending(limit=10) == []  # the backfill skips marks without rows ...
    repo.pending(limit=10, now=later())
    assert marks(repo) == set()  # ... and deletes them once they are older than the grace period


def test_a_failed_row_insert_deletes_its_marks(repo):
    from pymongo.errors import AutoReconnect

    class RowsInsertFails(_RowsInsertDies):
        def insert_many(self, docs, ordered=True):
            raise AutoReconnect("connection lost")

    repo.col = RowsInsertFails(repo.col)
    with pytest.raises(AutoReconnect):
        insert(repo, 3)
    assert marks(repo) == set()


def test_an_insert_into_a_frozen_server_gives_up_within_its_bound(db, ferretdb):
    from pymongo.errors import PyMongoError

    from devstack.faults import paused

    predictions = PredictionsRepository(db["predictions"], insert_timeout=1.0)
    predictions.insert(batch_documents(_one_batch()))  # connected before the freeze
    with paused(ferretdb, 0), pytest.raises(PyMongoError):
        started = time.monotonic()
        predictions.insert(batch_documents(_one_batch()))
    assert time.monotonic() - started < 10  # generous: the bound is 1 s; pymongo's own socket timeout is 20 s


def _one_batch() -> PredictionBatch:
    return PredictionBatch(np.ones((1, len(FEATURES))), np.ones(1), MODEL, None, dt.datetime.now(dt.UTC))
