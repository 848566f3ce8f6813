"""Serving use cases; nothing here knows about Flask."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
from pymongo.errors import PyMongoError

from mlstack_core.data.generator import generate_frame
from mlstack_core.errors import ApiError
from mlstack_core.locks import MongoLease
from mlstack_core.mongo import MongoProvider, public_doc
from mlstack_core.rows import RowsRepository, new_batch_id
from mlstack_core.validation import ParsedRows, extract_rows, require_valid, validate_rows
from serving import metrics
from serving.model_store import LoadedModel, ModelNotReady, ModelStore
from serving.prediction_writer import PendingBatch, PredictionWriter

logger = logging.getLogger(__name__)

MAX_ID_LENGTH = 64
_ALLOWED_EXTRA = frozenset()


def served_model(store: ModelStore) -> LoadedModel:
    """The served model, or a 503 that says why there is none."""
    try:
        return store.current()
    except ModelNotReady as exc:
        raise ApiError(
            503, "MODEL_NOT_READY",
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
        raise ApiError(400, "INVALID_IDS", f"ids must be a list of {n} non-empty strings (one per row).")
    return ids


def predict(
    payload: Any, *, store: ModelStore, writer: PredictionWriter | None, request_id: str | None
) -> tuple[np.ndarray, bool, LoadedModel]:
    """Validate rows, predict them with the served model and queue them for storage."""
    rows, single = extract_rows(payload)
    ids = _row_ids(payload, len(rows))
    parsed: ParsedRows = validate_rows(rows)
    require_valid(parsed)
    model = served_model(store)
    predictions = model.predict(parsed.features)
    metrics.PREDICTIONS.inc(len(predictions))
    if writer is not None:
        known = parsed.quality if any(q is not None for q in parsed.quality) else None
        writer.add(
            PendingBatch(parsed.features, predictions, model.info(), request_id, ids, dt.datetime.now(dt.UTC), known)
        )
    return predictions, single, model


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
        repo.insert_batch(features, frame["quality"].tolist(), source="seed", batch_id=new_batch_id(), pending=False)
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
