"""Serving use cases; nothing here knows about Flask."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymongo.errors import PyMongoError

from mlstack_core import tracing
from mlstack_core.data.generator import generate_frame
from mlstack_core.locks import MongoLease
from mlstack_core.mongo import MongoProvider, public_doc
from mlstack_core.predictions import PredictionBatch, PredictionsRepository, batch_documents
from mlstack_core.rows import RowsRepository, new_batch_id
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import ParsedRows, extract_rows, require_valid, validate_rows
from serving import metrics
from serving.model_store import LoadedModel, ModelNotReady, ModelStore
from serving.prediction_writer import PredictionWriter

logger = logging.getLogger(__name__)

MAX_ID_LENGTH = 64
_ALLOWED_EXTRA = frozenset()


def served_model(store: ModelStore) -> LoadedModel:
    """The served model, or a 503 that says why there is none."""
    try:
        return store.current()
    except ModelNotReady as exc:
        raise ServiceError("MODEL_NOT_READY",
            f"No model to serve yet: {exc}. Serving checks the registry every few seconds; train and promote a "
            "model (the training service does this at start) and retry.",
        ) from None


def _row_ids(payload: Any, n: int) -> list[str] | None:
    if not isinstance(payload, dict) or "ids" not in payload:
        return None
    ids = payload["ids"]
    if not isinstance(ids, list) or len(ids) != n or not all(
        isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids
    ):
        raise ServiceError("INVALID_IDS", f"ids must be a list of {n} non-empty strings (one per row).")
    return ids


@dataclass(frozen=True)
class Prediction:
    """What a predict call produced: the values, whether one row object was sent, the model, rows stored."""

    values: np.ndarray
    single: bool
    model: LoadedModel
    stored: int | None  # rows whose prediction is in MongoDB now (row-id requests only; None: buffered)


def predict(
    payload: Any,
    *,
    store: ModelStore,
    writer: PredictionWriter | None,
    predictions: Callable[[], PredictionsRepository],
    service_caller: bool,
    request_id: str | None,
) -> Prediction:
    """Validate rows, predict them with the served model and store (or queue) the predictions.

    Rows with ``ids`` (the ETL's, from a service caller only; the route checks the token) are stored before
    this returns, whatever STORE_PREDICTIONS says, or a 503 PREDICTIONS_NOT_STORED is raised. Other
    predictions go to the buffered writer (when there is one). Ground-truth ``quality`` is kept only from a
    service caller: anyone else's is ignored, so it never reaches the live error figures.
    """
    rows, single = extract_rows(payload)
    ids = _row_ids(payload, len(rows))
    parsed: ParsedRows = validate_rows(rows)
    require_valid(parsed)
    model = served_model(store)
    values = model.predict(parsed.features)
    metrics.PREDICTIONS.inc(len(values))
    quality = parsed.quality if service_caller and any(q is not None for q in parsed.quality) else None
    batch = PredictionBatch(
        parsed.features, values, model.info(), request_id, dt.datetime.now(dt.UTC), row_ids=ids, quality=quality
    )
    if ids is not None:
        # The ETL's batches: what its trace shows of serving (anonymous predictions add nothing to the request).
        tracing.annotate({"rows": len(ids), "model.name": model.name, "model.version": model.version})
        return Prediction(values, single, model, _store_now(predictions(), batch))
    if writer is not None:
        writer.add(batch)
    return Prediction(values, single, model, None)


def _store_now(repo: PredictionsRepository, batch: PredictionBatch) -> int:
    """Write a row-id batch before answering; 503 unless every row's prediction is stored (now or before)."""
    try:
        result = repo.insert(batch_documents(batch))
    except PyMongoError as exc:
        logger.warning("%d row-id predictions not stored: %s: %s", len(batch), type(exc).__name__, exc)
        raise _not_stored("MongoDB is unreachable or did not take them in time") from None
    metrics.PREDICTIONS_STORED.inc(result.written)
    if result.refused:
        logger.error("MongoDB refused %d of %d row-id predictions: %s", len(result.refused), len(batch),
                     result.refused[:3])
        raise _not_stored(f"MongoDB refused {len(result.refused)} of {len(batch)} predictions")
    return result.stored


def _not_stored(why: str) -> ServiceError:
    return ServiceError("PREDICTIONS_NOT_STORED",
        f"{why}: the predictions of these rows are not (all) stored, so the rows stay pending. Send them again "
        "later (rows already stored are not stored twice).",
    )


def latest_rows(repo: RowsRepository, n: int) -> list[dict[str, Any]]:
    """The n newest rows as JSON-friendly dicts."""
    return [public_doc(doc) for doc in repo.latest(n)]


def seed_if_empty(mongo: MongoProvider, collection: str, rows: int) -> int:
    """On first start with an empty collection, insert generated rows (once, whatever the worker count)."""
    if rows <= 0:
        return 0
    db = mongo.db()
    repo = RowsRepository(db[collection])
    with MongoLease(db, f"seed:{collection}", ttl_seconds=120) as lease:
        if not lease.acquire():
            return 0
        repo.ensure_indexes()
        if repo.has_rows():
            return 0
        frame = generate_frame(rows, seed=None)
        features = frame.drop(columns=["quality"]).to_numpy(dtype=np.float64)
        # Pending like any other row: the ETL's backfill predicts them, so no row lacks both mark and prediction.
        repo.insert_batch(features, frame["quality"].tolist(), source="seed", batch_id=new_batch_id(), pending=True)
        logger.info("seeded %s with %d generated rows", collection, rows)
        return rows


def seed_in_background(mongo: MongoProvider, collection: str, rows: int, attempts: int = 30) -> None:
    """Seed without delaying start-up; retries while MongoDB is still coming up."""
    import threading
    import time

    def _run() -> None:
        for _ in range(attempts):
            try:
                seed_if_empty(mongo, collection, rows)
                return
            except PyMongoError as exc:
                logger.info("seeding postponed, MongoDB not ready: %s", exc)
                time.sleep(2)

    threading.Thread(target=_run, name="seed", daemon=True).start()
