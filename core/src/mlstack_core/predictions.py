"""The predictions collection (``DUMMY.predictions`` by default): the one owner of the prediction document.

Two layouts, both with ``model_name``, ``model_version``, ``run_id`` and ``created_at``:

- **per row** (rows the ETL forwarded, and labelled rows): one document per predicted row, the 11 inputs by
  feature name (``inputs``), ``prediction``, ``request_id`` and, for the ETL's rows, ``row_id`` and the row's true
  ``quality``;
- **bucket** (anonymous predictions: the writer packs what one flush holds of a model, one-row requests and
  batches alike, into one): ``rows`` (the count), ``columns`` (the feature names), ``dtype`` (``"<f8"``), two
  binaries, ``inputs`` (the rows x columns matrix, row-major) and ``predictions``, both little-endian float64
  (``numpy.frombuffer``; :func:`unpack_bucket`), ``request_ids`` and ``request_rows`` (which request each run of
  rows came from, in order) and ``created_at`` (its newest request's). FerretDB stores rows this way for a small
  fraction of the CPU of one document per row or of one document of arrays (``bench/README.md``, storage), and
  nothing reads an anonymous prediction by id or by a field of its inputs.

The ``_id`` is fixed before the first write attempt and never changes:

- an ETL row's prediction is stored under the row's own ``_id``, so a retried or backfilled row is stored once
  (the second insert is a duplicate key) and the ETL can check by id that it was stored before it clears the
  row's pending mark (:meth:`mlstack_core.rows.RowsRepository.mark_predicted`);
- an anonymous prediction (or bucket) gets a fresh ObjectId when its documents are built, kept across retries,
  so a flush that timed out after the server wrote it stores nothing twice when it is sent again.

Only operations FerretDB implements too are used (insert_many, find and find_one by ``_id``, find with
``$in``/``$ne``, sort, limit, projection, create_index); tests run them against FerretDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymongo
from bson import Binary, ObjectId
from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from mlstack_core.data.generator import FEATURES, TARGET
from mlstack_core.mongo import collection_count

logger = logging.getLogger(__name__)

PREDICTIONS_COLLECTION = "predictions"
DUPLICATE_KEY = 11000
# MongoDB answers an _id equality and an ``$in`` from the _id index. FerretDB's SQLite backend (native runs, tests)
# uses no index for either: it filters an _id equality inside SQLite (0.12 s on 101,600 stored predictions) but
# decodes every document for an ``$in`` (20.8 s on the same collection, beyond the 20 s socket timeout). Up to
# this many ids are looked up one find each, more with one ``$in``.
FEW_IDS = 64
# A bucket's packed numbers: little-endian float64 (numpy's "<f8").
BUCKET_DTYPE = "<f8"


@dataclass(frozen=True)
class PredictionBatch:
    """One request's predictions, kept as arrays until documents are built (off the request path)."""

    features: np.ndarray
    predictions: np.ndarray
    model: dict[str, Any]
    request_id: str | None
    created_at: dt.datetime
    row_ids: list[str] | None = None  # the ETL's row ids (service callers only): the documents' _ids
    quality: list[int | None] | None = None  # true quality sent by the ETL, for live error monitoring
    # Several anonymous requests packed together (merge_batches): (request id, rows) of each, in order.
    parts: tuple[tuple[str | None, int], ...] | None = None

    def __len__(self) -> int:
        return len(self.predictions)


def merge_batches(batches: Sequence[PredictionBatch]) -> PredictionBatch:
    """Several packable batches of one model (:func:`is_packable`, same ``model``) as one, rows in order; its
    ``created_at`` is the newest batch's, its ``parts`` say which request each run of rows came from."""
    if not batches or not all(is_packable(b) and b.model == batches[0].model for b in batches):
        raise ValueError("only packable batches of one model merge")
    parts = tuple(part for b in batches for part in (b.parts or ((b.request_id, len(b)),)))
    return PredictionBatch(
        np.concatenate([b.features for b in batches]), np.concatenate([b.predictions for b in batches]),
        batches[0].model, None, max(b.created_at for b in batches), parts=parts,
    )


def document_id(row_id: str) -> Any:
    """The _id a row's prediction is stored under: the row's ObjectId (rows' ids are ObjectIds), else the text."""
    return ObjectId(row_id) if ObjectId.is_valid(row_id) else row_id


def is_packable(batch: PredictionBatch) -> bool:
    """Whether a batch is stored packed in a bucket: anonymous (no row ids) and unlabelled (no true quality)."""
    return batch.row_ids is None and batch.quality is None


def bucket_document(batch: PredictionBatch) -> dict[str, Any]:
    """One document for packable predictions (one request, or several merged): the inputs as one packed matrix,
    rows in order, columns named by ``columns``, the predictions packed alike (little-endian float64;
    :func:`unpack_bucket`), and which request each run of rows came from (``request_ids``, ``request_rows``)."""
    parts = batch.parts or ((batch.request_id, len(batch)),)
    return {
        "_id": ObjectId(),
        "rows": len(batch),
        "columns": list(FEATURES),
        "dtype": BUCKET_DTYPE,
        "inputs": Binary(np.ascontiguousarray(batch.features, dtype=BUCKET_DTYPE).tobytes()),
        "predictions": Binary(np.ascontiguousarray(batch.predictions, dtype=BUCKET_DTYPE).tobytes()),
        "model_name": batch.model["name"],
        "model_version": batch.model["version"],
        "run_id": batch.model["run_id"],
        "request_ids": [request_id for request_id, _ in parts],
        "request_rows": [rows for _, rows in parts],
        "created_at": batch.created_at,
    }


def unpack_bucket(doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs as a rows x FEATURES matrix in FEATURES order, predictions) of a bucket document.

    ValueError, KeyError or TypeError when the document is not a well-formed bucket.
    """
    if doc.get("dtype") != BUCKET_DTYPE:
        raise ValueError(f"bucket dtype {doc.get('dtype')!r}, expected {BUCKET_DTYPE!r}")
    rows, columns = int(doc["rows"]), list(doc["columns"])
    matrix = np.frombuffer(doc["inputs"], dtype=BUCKET_DTYPE).reshape(rows, len(columns))
    predictions = np.frombuffer(doc["predictions"], dtype=BUCKET_DTYPE)
    if len(predictions) != rows:
        raise ValueError(f"{len(predictions)} predictions in a bucket of {rows} rows")
    return matrix[:, [columns.index(name) for name in FEATURES]].astype(np.float64), predictions.astype(np.float64)


def document_rows(doc: dict[str, Any]) -> int:
    """How many predicted rows a stored document holds (a bucket's ``rows``, else one)."""
    rows = doc.get("rows")
    return rows if isinstance(rows, int) and "predictions" in doc else 1


def _doc_rows(doc: dict[str, Any]) -> np.ndarray:
    """A document's rows as a matrix of [inputs in FEATURES order..., prediction], newest first (a bucket's last
    rows came last); a malformed document gives no rows."""
    try:
        if "predictions" in doc:  # a bucket
            inputs, predictions = unpack_bucket(doc)
            return np.column_stack([inputs, predictions])[::-1]
        inputs = doc.get("inputs") or {}
        return np.array([[*(float(inputs[name]) for name in FEATURES), float(doc["prediction"])]])
    except (KeyError, TypeError, ValueError):
        return np.empty((0, len(FEATURES) + 1))


def batch_documents(batch: PredictionBatch) -> list[dict[str, Any]]:
    """The documents of a batch, each with its final _id (the row's id, or a new ObjectId): one bucket when it is
    packable (:func:`is_packable`), else one per row."""
    return [bucket_document(batch)] if is_packable(batch) else row_documents(batch)


def row_documents(batch: PredictionBatch) -> list[dict[str, Any]]:
    """One document per row of a batch (the per-row layout), each with its final _id."""
    docs = []
    rows = batch.features.tolist()
    preds = batch.predictions.tolist()
    for i, (row, pred) in enumerate(zip(rows, preds, strict=True)):
        doc: dict[str, Any] = {
            "_id": ObjectId() if batch.row_ids is None else document_id(batch.row_ids[i]),
            "inputs": dict(zip(FEATURES, row, strict=True)),
            "prediction": pred,
            "model_name": batch.model["name"],
            "model_version": batch.model["version"],
            "run_id": batch.model["run_id"],
            "request_id": batch.request_id,
            "created_at": batch.created_at,
        }
        if batch.row_ids is not None:
            doc["row_id"] = batch.row_ids[i]
        if batch.quality is not None and batch.quality[i] is not None:
            doc[TARGET] = batch.quality[i]
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class InsertResult:
    """What one insert did: documents written now, already stored (same _id), and refused by MongoDB."""

    written: int
    duplicates: int
    refused: list[dict[str, Any]]

    @property
    def stored(self) -> int:
        """Documents that are in the collection after the insert (written now or before)."""
        return self.written + self.duplicates


def insert_keeping_existing(collection: Collection, docs: Sequence[dict[str, Any]]) -> InsertResult:
    """insert_many, unordered, of documents that carry their _id: one already there counts as stored.

    Other write errors come back in ``refused``; any other PyMongoError propagates. The one place that
    decides what a duplicate key means (predictions here, rows and pending marks in mlstack_core.rows).
    """
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        refused = [e for e in errors if e.get("code") != DUPLICATE_KEY]
        return InsertResult(len(docs) - len(errors), len(errors) - len(refused), refused)
    return InsertResult(len(docs), 0, [])


class PredictionsRepository:
    """Writes and reads of the predictions collection.

    ``insert_timeout`` bounds one insert as a whole (server selection, every batch, the answer): a caller
    waiting for it (the ETL waiting for serving) gets an answer before it gives up itself.
    """

    def __init__(self, collection: Collection, *, insert_timeout: float | None = None) -> None:
        self.col = collection
        self.insert_timeout = insert_timeout

    def ensure_indexes(self) -> None:
        """The index the monitoring windows sort on (without it every pass is a full scan on MongoDB)."""
        self.col.create_index([("created_at", DESCENDING)], name="created_at_desc")

    def insert(self, docs: Sequence[dict[str, Any]]) -> InsertResult:
        """Insert documents that carry their _id; a duplicate key means "already stored", not an error.

        Other write errors are returned in ``refused`` (those documents are not stored); any other
        PyMongoError (server down, timeout) propagates: some documents may have been written, and sending the
        same documents again stores each once.
        """
        if not docs:
            return InsertResult(0, 0, [])
        bound = pymongo.timeout(self.insert_timeout) if self.insert_timeout else contextlib.nullcontext()
        with bound:
            return insert_keeping_existing(self.col, docs)

    def stored_ids(self, ids: Iterable[Any]) -> set[Any]:
        """Which of these _ids have a stored prediction (read from the database, by id)."""
        return set(self._find_by_ids(ids, {"_id": 1}))

    def by_ids(self, ids: Iterable[Any]) -> dict[Any, dict[str, Any]]:
        """Prediction, model and time of the stored predictions of these _ids."""
        return self._find_by_ids(ids, {"prediction": 1, "model_name": 1, "model_version": 1, "created_at": 1})

    def _find_by_ids(self, ids: Iterable[Any], projection: dict[str, int]) -> dict[Any, dict[str, Any]]:
        wanted = list(dict.fromkeys(ids))
        if len(wanted) <= FEW_IDS:
            found = (self.col.find_one({"_id": row_id}, projection) for row_id in wanted)
            return {doc["_id"]: doc for doc in found if doc is not None}
        return {doc["_id"]: doc for doc in self.col.find({"_id": {"$in": wanted}}, projection)}

    def stored_rows(self) -> int:
        """Predicted rows stored, both layouts: the collection's document count (its statistics, not a scan), with
        each bucket counted by its rows."""
        documents = collection_count(self.col)
        buckets = [doc.get("rows", 1) for doc in self.col.find({"rows": {"$exists": True}}, {"rows": 1, "_id": 0})]
        return documents - len(buckets) + sum(buckets)

    def recent_inputs(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (matrix in FEATURES order) and predicted values of the n newest stored predicted rows, from
        both layouts (a bucket's newest rows first); malformed documents are left out."""
        # n documents hold at least n rows; small batches so that buckets stop the read early.
        fields = ("inputs", "prediction", "predictions", "rows", "columns", "dtype")
        cursor = (
            self.col.find({}, {**dict.fromkeys(fields, 1), "_id": 0})
            .sort("created_at", DESCENDING).limit(n).batch_size(min(n, 64))
        )
        parts: list[np.ndarray] = []
        found = 0
        with cursor:
            for doc in cursor:
                part = _doc_rows(doc)[: n - found]  # a bucket's rows stay one array: no per-row lists
                parts.append(part)
                found += len(part)
                if found >= n:
                    break
        data = np.concatenate(parts) if parts else np.empty((0, len(FEATURES) + 1))
        return data[:, :-1], data[:, -1]

    def recent_labelled(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, true quality) of the n newest stored predictions whose true quality is known."""
        cursor = (
            self.col.find({TARGET: {"$ne": None}}, {"prediction": 1, TARGET: 1, "_id": 0})
            .sort("created_at", DESCENDING)
            .limit(n)
        )
        pairs = [
            (doc["prediction"], doc[TARGET]) for doc in cursor
            if isinstance(doc.get("prediction"), int | float) and isinstance(doc.get(TARGET), int | float)
        ]
        data = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        return data[:, 0], data[:, 1]
