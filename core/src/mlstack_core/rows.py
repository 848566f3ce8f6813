"""The wine rows collection (``DUMMY.dummy_col_demo`` by default): the one place that reads and writes it.

A row document is written once and never updated: the 11 features by name, optional ``quality`` (ground
truth), ``datetime_`` (ingest time), ``batch_id`` and ``source`` (generator, ingest, seed). Rows still waiting
for a prediction have a mark in ``<collection>_pending`` (same ``_id``), deleted when serving has answered;
serving stores the prediction itself in ``predictions`` under the row's id. Why not a status field on the row:
an update costs FerretDB (the MongoDB-protocol server used natively and in tests) time proportional to the
collection size per document (measured: 60 ms per update in a 30k-row collection), while inserts and deletes
by ``_id`` stay cheap; on MongoDB both designs are fine.
Only MongoDB features that FerretDB also implements are used (insert_many, find with sort/limit/projection and
``$in``/``$nin``, delete_many, ``$collStats`` count, create_index); tests run them against FerretDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import operator
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import bson
import numpy as np
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from mlstack_core.data.generator import FEATURES, TARGET
from mlstack_core.mongo import collection_count

PENDING = "pending"
DONE = "done"
PREDICTIONS_COLLECTION = "predictions"


def new_batch_id() -> str:
    """An id shared by the rows of one ETL run or ingest request."""
    return uuid.uuid4().hex


class RowsRepository:
    """Reads and writes of the rows collection and its pending marks."""

    def __init__(self, collection: Collection, *, predictions: str = PREDICTIONS_COLLECTION) -> None:
        self.col = collection
        self.pending_col = collection.database[f"{collection.name}_pending"]
        self.predictions_col = collection.database[predictions]

    def ensure_indexes(self) -> None:
        """Indexes for the latest-rows read and the backfill query."""
        self.col.create_index([("datetime_", DESCENDING)], name="datetime_desc")
        self.pending_col.create_index([("datetime_", ASCENDING)], name="datetime_asc")

    def insert_batch(
        self,
        features: np.ndarray,
        quality: Sequence[int | None],
        *,
        source: str,
        batch_id: str,
        pending: bool,
        now: dt.datetime | None = None,
    ) -> list[ObjectId]:
        """Insert one batch (and its pending marks); on failure delete what was written: no half batch."""
        now = now or dt.datetime.now(dt.UTC)
        docs = []
        for row, q in zip(features.tolist(), quality, strict=True):
            doc: dict[str, Any] = dict(zip(FEATURES, row, strict=True))
            if q is not None:
                doc[TARGET] = int(q)
            doc.update(datetime_=now, batch_id=batch_id, source=source)
            docs.append(doc)
        try:
            ids = list(self.col.insert_many(docs, ordered=True).inserted_ids)
            if pending:
                self.pending_col.insert_many(
                    [{"_id": row_id, "datetime_": now, "batch_id": batch_id} for row_id in ids], ordered=True
                )
        except PyMongoError:
            # If the database is gone, nothing more can be written either.
            with contextlib.suppress(PyMongoError):
                self.col.delete_many({"batch_id": batch_id})
                self.pending_col.delete_many({"batch_id": batch_id})
            raise
        return ids

    def pending(self, *, limit: int, exclude: Iterable[ObjectId] = ()) -> list[dict[str, Any]]:
        """Rows still waiting for a prediction, oldest first (the backfill), with features and quality."""
        excluded = list(exclude)
        query: dict[str, Any] = {"_id": {"$nin": excluded}} if excluded else {}
        marks = self.pending_col.find(query, {"_id": 1}).sort("datetime_", ASCENDING).limit(limit)
        ids = [mark["_id"] for mark in marks]
        if not ids:
            return []
        by_id = {doc["_id"]: doc for doc in self.rows_by_id(ids)}
        return [by_id[row_id] for row_id in ids if row_id in by_id]

    def rows_by_id(self, ids: Sequence[ObjectId]) -> list[dict[str, Any]]:
        """The feature values (and quality) of the given rows."""
        projection = {name: 1 for name in (*FEATURES, TARGET)}
        return list(self.col.find({"_id": {"$in": list(ids)}}, projection))

    def mark_predicted(self, ids: Sequence[ObjectId]) -> int:
        """Drop the pending marks of rows serving answered for; returns how many were still pending."""
        if not ids:
            return 0
        return self.pending_col.delete_many({"_id": {"$in": list(ids)}}).deleted_count

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The n most recently ingested rows, newest first, with prediction status, value and model version."""
        rows = list(self.col.find({}).sort("datetime_", DESCENDING).limit(n))
        ids = [row["_id"] for row in rows]
        pending = {mark["_id"] for mark in self.pending_col.find({"_id": {"$in": ids}}, {"_id": 1})}
        predictions = {
            doc["_id"]: doc
            for doc in self.predictions_col.find(
                {"_id": {"$in": ids}}, {"prediction": 1, "model_name": 1, "model_version": 1, "created_at": 1}
            )
        }
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
        return collection_count(self.pending_col)  # one mark per waiting row, nothing else


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


def _tolerant_block(docs: list[dict[str, Any]], getter: operator.itemgetter) -> np.ndarray:
    # The slow path for a batch with a malformed row: such rows become NaN and are dropped by the caller.
    block = np.full((len(docs), len(FEATURES) + 1), np.nan)
    for i, doc in enumerate(docs):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            block[i] = np.array(getter(doc), dtype=np.float64)
    return block
