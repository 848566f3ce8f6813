"""The wine rows collection (``DUMMY.dummy_col_demo`` by default): the one place that reads and writes it.

A row document is written once and never updated: the 11 features by name, optional ``quality`` (ground
truth), ``datetime_`` (ingest time), ``batch_id`` and ``source`` (generator, ingest, seed). Rows still waiting
for a prediction have a mark in ``<collection>_pending`` (same ``_id``); the prediction itself is stored by
serving under the row's id (:mod:`mlstack_core.predictions`). Why not a status field on the row: an update
costs FerretDB (the MongoDB-protocol server used natively and in tests) time proportional to the collection
size per document (measured: 60 ms per update in a 30k-row collection), while inserts and deletes by ``_id``
stay cheap; on MongoDB both designs are fine.

The invariant this module keeps (there are no multi-document transactions to lean on): every row has a
pending mark or a stored prediction, never neither, and exactly one prediction once its mark is gone.

- :meth:`RowsRepository.insert_batch` writes the marks *before* the rows: a crash in between leaves marks
  without rows, which the backfill skips and later deletes, never a row without a mark;
- :meth:`RowsRepository.mark_predicted` deletes only the marks of rows whose prediction is stored;
- :meth:`RowsRepository.sweep` re-marks rows found with neither (rows written by older code, marks deleted by
  hand), a bounded slice per call, walking the collection once behind a stored watermark.

A batch sent with an idempotency key (:meth:`RowsRepository.claim_ingest_key`) gets row ids derived from the key,
so a retry after the database went away mid-insert writes the missing rows, not a second copy; such a batch is
not cleaned up on failure, the retry completes it.

Only MongoDB features that FerretDB also implements are used (insert_many, find with sort/limit/projection and
``$in``/``$nin``/``$gt``/``$lt``, delete_many, update_one with upsert, ``$collStats`` count, create_index);
tests run them against FerretDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import operator
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bson
import numpy as np
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from mlstack_core.data.generator import FEATURES, TARGET
from mlstack_core.mongo import collection_count
from mlstack_core.predictions import PREDICTIONS_COLLECTION, PredictionsRepository, insert_keeping_existing

logger = logging.getLogger(__name__)

PENDING = "pending"
DONE = "done"
# Longer than any batch insert can be held up between its marks and its rows (Gunicorn kills a worker silent
# for GUNICORN_TIMEOUT, 60 s by default): a mark without a row older than this is left over from a failed
# insert and is deleted; a row younger than this may still be getting its mark, so the sweep leaves it alone.
ORPHAN_GRACE = dt.timedelta(minutes=10)
_WATERMARK = "sweep_watermark"


def new_batch_id() -> str:
    """An id shared by the rows of one ETL run or ingest request."""
    return uuid.uuid4().hex


class IdempotencyKeyReused(Exception):
    """The idempotency key was first used for a different batch."""


@dataclass(frozen=True)
class IngestClaim:
    """The batch an idempotency key stands for: its id, its row ids, and whether the key was seen before."""

    batch_id: str
    ids: list[ObjectId]
    replay: bool


def keyed_ids(key: str, seconds: int, count: int) -> list[ObjectId]:
    """Row ids of a keyed batch: ObjectIds with the first attempt's time, bytes of the key and the row index."""
    # The usual ObjectId layout (4-byte time, 5 bytes, 3-byte counter), so the sweep's time bounds still hold.
    middle = hashlib.sha256(key.encode()).digest()[:5]
    stamp = seconds.to_bytes(4, "big")
    return [ObjectId(stamp + middle + index.to_bytes(3, "big")) for index in range(count)]


@dataclass(frozen=True)
class SweepResult:
    """One sweep slice: rows looked at, rows found with neither mark nor prediction (now pending again)."""

    scanned: int
    remarked: int


class RowsRepository:
    """Reads and writes of the rows collection and its pending marks."""

    def __init__(self, collection: Collection, *, predictions: str = PREDICTIONS_COLLECTION) -> None:
        self.col = collection
        self.pending_col = collection.database[f"{collection.name}_pending"]
        self.sweep_col = collection.database[f"{collection.name}_sweep"]
        self.keys_col = collection.database[f"{collection.name}_ingest_keys"]
        self.predictions = PredictionsRepository(collection.database[predictions])

    def ensure_indexes(self) -> None:
        """Indexes for the latest-rows read and the backfill query."""
        self.col.create_index([("datetime_", DESCENDING)], name="datetime_desc")
        self.pending_col.create_index([("datetime_", ASCENDING)], name="datetime_asc")

    def claim_ingest_key(
        self, key: str, *, fingerprint: str, rows: int, now: dt.datetime | None = None
    ) -> IngestClaim:
        """The batch of this idempotency key: a new one the first time, the same one (same ids) on a retry.

        Raises IdempotencyKeyReused when the key was first sent with other rows.
        """
        now = now or dt.datetime.now(dt.UTC)
        record = {"_id": key, "batch_id": new_batch_id(), "fingerprint": fingerprint, "rows": rows,
                  "id_seconds": int(now.timestamp()), "created_at": now}
        replay = False
        try:
            self.keys_col.insert_one(record)
        except DuplicateKeyError:
            first = self.keys_col.find_one({"_id": key})
            if first is None:  # deleted by hand between the two calls
                raise
            if first.get("fingerprint") != fingerprint or first.get("rows") != rows:
                raise IdempotencyKeyReused(key) from None
            record, replay = first, True
        return IngestClaim(record["batch_id"], keyed_ids(key, int(record["id_seconds"]), rows), replay)

    def insert_batch(
        self,
        features: np.ndarray,
        quality: Sequence[int | None],
        *,
        source: str,
        batch_id: str,
        pending: bool,
        ids: Sequence[ObjectId] | None = None,
        now: dt.datetime | None = None,
    ) -> list[ObjectId]:
        """Insert one batch, its pending marks first; on failure delete what was written: no half batch.

        With ``ids`` (a keyed batch) rows and marks already written are kept, on a retry and on failure: the
        retry with the same ids writes only what is missing.
        """
        now = now or dt.datetime.now(dt.UTC)
        keyed = ids is not None
        row_ids = list(ids) if keyed else [ObjectId() for _ in range(len(features))]
        if len(row_ids) != len(features):
            raise ValueError(f"{len(row_ids)} ids for {len(features)} rows")
        docs = []
        for row_id, row, q in zip(row_ids, features.tolist(), quality, strict=True):
            doc: dict[str, Any] = {"_id": row_id, **dict(zip(FEATURES, row, strict=True))}
            if q is not None:
                doc[TARGET] = int(q)
            doc.update(datetime_=now, batch_id=batch_id, source=source)
            docs.append(doc)
        try:
            if pending:
                # Marks first: if what follows fails or the process dies, no row exists without its mark.
                marks = [{"_id": row_id, "datetime_": now, "batch_id": batch_id} for row_id in row_ids]
                _insert(self.pending_col, marks, keep_existing=keyed)
            _insert(self.col, docs, keep_existing=keyed)
        except PyMongoError:
            if keyed:
                raise
            # Rows first, then marks, so a cleanup cut short by the database going away leaves marks, not rows
            # without them. If the database is gone, nothing more can be written either.
            with contextlib.suppress(PyMongoError):
                self.col.delete_many({"batch_id": batch_id})
                self.pending_col.delete_many({"batch_id": batch_id})
            raise
        return row_ids

    def pending(
        self, *, limit: int, exclude: Iterable[ObjectId] = (), now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Rows still waiting for a prediction, oldest first (the backfill), with features and quality.

        Marks without a row are skipped; those older than ORPHAN_GRACE (left by a failed insert) are deleted.
        """
        excluded = list(exclude)
        query: dict[str, Any] = {"_id": {"$nin": excluded}} if excluded else {}
        marks = list(self.pending_col.find(query, {"_id": 1, "datetime_": 1}).sort("datetime_", ASCENDING).limit(limit))
        ids = [mark["_id"] for mark in marks]
        if not ids:
            return []
        by_id = {doc["_id"]: doc for doc in self.rows_by_id(ids)}
        cutoff = (now or dt.datetime.now(dt.UTC)) - ORPHAN_GRACE
        stale = [m["_id"] for m in marks if m["_id"] not in by_id and _older(m.get("datetime_"), cutoff)]
        if stale:
            deleted = self.pending_col.delete_many({"_id": {"$in": stale}}).deleted_count
            logger.info("deleted %d pending marks whose rows were never written (a failed insert)", deleted)
        return [by_id[row_id] for row_id in ids if row_id in by_id]

    def rows_by_id(self, ids: Sequence[ObjectId]) -> list[dict[str, Any]]:
        """The feature values (and quality) of the given rows."""
        projection = {name: 1 for name in (*FEATURES, TARGET)}
        return list(self.col.find({"_id": {"$in": list(ids)}}, projection))

    def mark_predicted(self, ids: Sequence[ObjectId]) -> tuple[int, list[ObjectId]]:
        """Delete the pending marks of the rows whose prediction is stored (checked by id, whatever serving said).

        Returns the number of marks deleted and the ids left pending because no prediction is stored for them.
        """
        if not ids:
            return 0, []
        stored = self.predictions.stored_ids(ids)
        done = [row_id for row_id in ids if row_id in stored]
        missing = [row_id for row_id in ids if row_id not in stored]
        cleared = self.pending_col.delete_many({"_id": {"$in": done}}).deleted_count if done else 0
        return cleared, missing

    def sweep(self, *, limit: int, now: dt.datetime | None = None) -> SweepResult:
        """Re-mark as pending the rows that have neither a mark nor a prediction, up to `limit` rows per call.

        Walks the rows in _id order (ObjectIds start with their creation time) behind a watermark stored in
        ``<collection>_sweep``, only over rows older than ORPHAN_GRACE (younger ones may be mid-insert), so
        repeated calls cover the whole collection once and then only what arrived since.
        """
        now = now or dt.datetime.now(dt.UTC)
        state = self.sweep_col.find_one({"_id": _WATERMARK}) or {}
        bounds: dict[str, Any] = {"$lt": ObjectId.from_datetime(now - ORPHAN_GRACE)}
        if state.get("last_id") is not None:
            bounds["$gt"] = state["last_id"]
        projection = {"_id": 1, "datetime_": 1, "batch_id": 1}
        rows = list(self.col.find({"_id": bounds}, projection).sort("_id", ASCENDING).limit(limit))
        if not rows:
            return SweepResult(0, 0)
        ids = [row["_id"] for row in rows]
        marked = {mark["_id"] for mark in self.pending_col.find({"_id": {"$in": ids}}, {"_id": 1})}
        # Read after the marks: mark_predicted stores-then-deletes, so a mark gone by now has its prediction.
        stored = self.predictions.stored_ids(row_id for row_id in ids if row_id not in marked)
        orphans = [row for row in rows if row["_id"] not in marked and row["_id"] not in stored]
        if orphans:
            marks = [{"_id": r["_id"], "datetime_": r.get("datetime_", now), "batch_id": r.get("batch_id")}
                     for r in orphans]
            _insert(self.pending_col, marks, keep_existing=True)  # a mark written meanwhile is as good as ours
            logger.warning("sweep: %d rows had neither a pending mark nor a prediction; pending again", len(orphans))
        self.sweep_col.update_one(
            {"_id": _WATERMARK}, {"$set": {"last_id": ids[-1], "updated_at": now}}, upsert=True
        )
        return SweepResult(len(rows), len(orphans))

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The n most recently ingested rows, newest first, with prediction status, value and model version."""
        rows = list(self.col.find({}).sort("datetime_", DESCENDING).limit(n))
        ids = [row["_id"] for row in rows]
        pending = {mark["_id"] for mark in self.pending_col.find({"_id": {"$in": ids}}, {"_id": 1})}
        predictions = self.predictions.by_ids(ids)
        for row in rows:
            prediction = predictions.get(row["_id"])
            if prediction is not None:
                row.update(
                    prediction_status=DONE, prediction=prediction.get("prediction"),
                    model_name=prediction.get("model_name"), model_version=prediction.get("model_version"),
                    predicted_at=prediction.get("created_at"),
                )
            elif row["_id"] in pending:
                row["prediction_status"] = PENDING
        return rows

    def count(self) -> int:
        """Number of rows, from the collection's statistics (no scan; see mlstack_core.mongo.collection_count)."""
        return collection_count(self.col)

    def has_rows(self) -> bool:
        """True when the collection holds at least one row (reads one _id)."""
        return self.col.find_one({}, {"_id": 1}) is not None

    def count_pending(self) -> int:
        """Number of rows waiting for a prediction."""
        # One mark per waiting row (and, for a moment, the marks of a batch insert in flight).
        return collection_count(self.pending_col)


    def labelled_arrays(
        self, *, batch_size: int = 10_000, max_time_ms: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Every row with a quality: (features in FEATURES order, quality, number of malformed rows skipped).

        Streams raw BSON batches of only the 12 fields into numpy blocks: no list of documents, no DataFrame
        built from dicts, memory bounded by one batch plus the result.
        """
        projection = {name: 1 for name in (*FEATURES, TARGET)} | {"_id": 0}
        getter = operator.itemgetter(*FEATURES, TARGET)
        blocks: list[np.ndarray] = []
        skipped = 0
        cursor = self.col.find_raw_batches(
            {TARGET: {"$ne": None}}, projection, batch_size=batch_size, max_time_ms=max_time_ms
        )
        with cursor:
            for raw in cursor:
                docs = bson.decode_all(raw)
                if not docs:
                    continue
                try:
                    block = np.array([getter(doc) for doc in docs], dtype=np.float64)
                except (KeyError, TypeError, ValueError):
                    block = _tolerant_block(docs, getter)
                finite = np.isfinite(block).all(axis=1)  # None becomes NaN above: dropped here
                skipped += len(docs) - int(finite.sum())
                blocks.append(block[finite])
        data = np.vstack(blocks) if blocks else np.empty((0, len(FEATURES) + 1))
        return data[:, :-1], data[:, -1], skipped


def _insert(col: Collection, docs: list[dict[str, Any]], *, keep_existing: bool) -> None:
    """insert_many; with keep_existing a document already there (same _id) counts as written."""
    if not keep_existing:
        col.insert_many(docs, ordered=True)
        return
    refused = insert_keeping_existing(col, docs).refused
    if refused:
        raise BulkWriteError({"writeErrors": refused})


def _older(value: Any, cutoff: dt.datetime) -> bool:
    # A mark without a usable time is treated as old: it cannot be from an insert in flight.
    if not isinstance(value, dt.datetime):
        return True
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value < cutoff


def _tolerant_block(docs: list[dict[str, Any]], getter: operator.itemgetter) -> np.ndarray:
    # The slow path for a batch with a malformed row: such rows become NaN and are dropped by the caller.
    block = np.full((len(docs), len(FEATURES) + 1), np.nan)
    for i, doc in enumerate(docs):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            block[i] = np.array(getter(doc), dtype=np.float64)
    return block
