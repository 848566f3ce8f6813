"""The wine rows collection (``DUMMY.dummy_col_demo`` by default): the one place that reads and writes it.

A row document: the 11 features by name, optional ``quality`` (ground truth), ``datetime_`` (ingest time),
``batch_id``, ``source`` (generator, ingest, seed), and for rows sent to serving ``prediction_status``
(``pending`` until serving answered, then ``done``) with ``prediction``, ``model_version``, ``predicted_at``.
Only MongoDB features that FerretDB also implements are used (insert_many, find with sort/limit/projection,
update_many, bulk UpdateOne, delete_many, count_documents, create_index); tests run them against FerretDB.
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
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from mlstack_core.data.generator import FEATURES, TARGET

PENDING = "pending"
DONE = "done"


def new_batch_id() -> str:
    """An id shared by the rows of one ETL run or ingest request."""
    return uuid.uuid4().hex


class RowsRepository:
    """Reads and writes of the rows collection."""

    def __init__(self, collection: Collection) -> None:
        self.col = collection

    def ensure_indexes(self) -> None:
        """Indexes for the latest-rows read and the backfill query."""
        self.col.create_index([("datetime_", DESCENDING)], name="datetime_desc")
        self.col.create_index([("prediction_status", ASCENDING)], name="prediction_status")

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
        """Insert one batch; on failure delete what was written so no half batch stays behind."""
        now = now or dt.datetime.now(dt.UTC)
        docs = []
        for row, q in zip(features.tolist(), quality, strict=True):
            doc: dict[str, Any] = dict(zip(FEATURES, row, strict=True))
            if q is not None:
                doc[TARGET] = int(q)
            doc.update(datetime_=now, batch_id=batch_id, source=source)
            if pending:
                doc["prediction_status"] = PENDING
            docs.append(doc)
        try:
            result = self.col.insert_many(docs, ordered=True)
        except PyMongoError:
            # If the database is gone, nothing more can be written either.
            with contextlib.suppress(PyMongoError):
                self.col.delete_many({"batch_id": batch_id})
            raise
        return list(result.inserted_ids)

    def pending(self, *, limit: int, exclude: Iterable[ObjectId] = ()) -> list[dict[str, Any]]:
        """Rows still waiting for a prediction, oldest first (the backfill)."""
        excluded = list(exclude)
        query: dict[str, Any] = {"prediction_status": PENDING}
        if excluded:
            query["_id"] = {"$nin": excluded}
        projection = {name: 1 for name in FEATURES}
        return list(self.col.find(query, projection).sort("datetime_", ASCENDING).limit(limit))

    def rows_by_id(self, ids: Sequence[ObjectId]) -> list[dict[str, Any]]:
        """The feature values of the given rows."""
        projection = {name: 1 for name in FEATURES}
        return list(self.col.find({"_id": {"$in": list(ids)}}, projection))

    def mark_predicted(
        self, ids: Sequence[ObjectId], predictions: Sequence[float], *, model_version: str | None,
        model_name: str | None,
    ) -> int:
        """Record serving's answers; only pending rows change, so a row is never predicted twice."""
        now = dt.datetime.now(dt.UTC)
        ops = [
            UpdateOne(
                {"_id": row_id, "prediction_status": PENDING},
                {"$set": {"prediction_status": DONE, "prediction": float(pred), "model_version": model_version,
                          "model_name": model_name, "predicted_at": now}},
            )
            for row_id, pred in zip(ids, predictions, strict=True)
        ]
        if not ops:
            return 0
        return self.col.bulk_write(ops, ordered=False).modified_count

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The n most recently ingested rows, newest first."""
        return list(self.col.find({}).sort("datetime_", DESCENDING).limit(n))

    def count(self, *, status: str | None = None) -> int:
        """Number of rows (optionally with a prediction status), counted by the server."""
        if status is None:
            return self.col.estimated_document_count()
        return self.col.count_documents({"prediction_status": status})

    def exact_count(self) -> int:
        """Exact number of rows (count_documents)."""
        return self.col.count_documents({})

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
