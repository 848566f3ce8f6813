"""ETL use cases: generate or ingest rows, store them, forward them to serving, backfill what is left.

A row stops being pending only once its prediction is stored: serving stores row-id predictions before it
answers, and the ETL still checks by id in the predictions collection before it deletes a mark
(:meth:`mlstack_core.rows.RowsRepository.mark_predicted`), so neither a serving bug nor a lost write marks a
row done without its prediction. What is not stored stays pending and goes with the next run (backfill).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import requests
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from mlstack_core import tracing
from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.http import forward_headers, make_session
from mlstack_core.rows import IdempotencyKeyReused, RowsRepository, new_batch_id
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import validate_rows

logger = logging.getLogger(__name__)

ROWS_INGESTED = Counter("etl_rows_ingested_total", "Rows written to MongoDB by the ETL.", ["source"])
ROWS_PREDICTED = Counter("etl_rows_predicted_total", "Rows that got their prediction from serving.")
ROWS_BACKFILLED = Counter("etl_rows_backfilled_total", "Rows of earlier runs predicted by a later run.")
FORWARD_FAILURES = Counter("etl_forward_failures_total", "Calls to serving that failed (rows stay pending).")
ROWS_UNSTORED = Counter(
    "etl_rows_unstored_total", "Rows serving answered for without a stored prediction (they stay pending)."
)
ROWS_SWEPT = Counter("etl_rows_swept_total", "Rows found with neither a pending mark nor a prediction, re-marked.")


class ForwardError(RuntimeError):
    """Serving could not predict the rows (down, slow, or no model yet); they stay pending."""


class Forwarder:
    """Sends rows to serving's batch predict endpoint (PREDICTAPI) in one call, as the ETL service."""

    def __init__(self, url: str, *, service_token: str, timeout: float, retries: int) -> None:
        self.url = url
        self.timeout = (2.0, timeout)
        self.session = make_session(retries=retries)
        self._token = service_token

    def predict(
        self, features: np.ndarray, quality: list[int | None], ids: list[str], request_id: str | None
    ) -> tuple[list[float], dict]:
        """Predictions for the rows, in order, and the model that made them.

        The row ids and known quality go along with the service token: serving stores each prediction under
        its row's id (with the quality, for live error monitoring) before it answers.
        """
        rows = []
        for values, truth in zip(features.tolist(), quality, strict=True):
            row: dict[str, Any] = dict(zip(FEATURES, values, strict=True))
            if truth is not None:
                row[TARGET] = int(truth)
            rows.append(row)
        try:
            response = self.session.post(
                self.url, json={"rows": rows, "ids": ids}, headers=forward_headers(request_id, self._token),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ForwardError(f"serving unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("message", "")
            except ValueError:
                detail = response.text[:200]
            raise ForwardError(f"serving answered {response.status_code}: {detail}")
        body = response.json()
        predictions = body.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(ids):
            raise ForwardError("serving answered without one prediction per row")
        return predictions, body.get("model") or {}


def forward(
    repo: RowsRepository,
    forwarder: Forwarder,
    *,
    new_ids: list,
    new_features: np.ndarray,
    new_quality: list[int | None],
    backfill_limit: int,
    request_id: str | None,
) -> dict[str, Any]:
    """Send new rows plus older pending ones to serving; rows whose prediction is stored stop being pending."""
    backlog = repo.pending(limit=backfill_limit, exclude=new_ids) if backfill_limit else []
    ids = list(new_ids) + [doc["_id"] for doc in backlog]
    if not ids:
        return {"sent": 0, "predicted": 0, "backfilled": 0}
    features = new_features
    quality = list(new_quality)
    if backlog:
        old = np.array([[doc[name] for name in FEATURES] for doc in backlog], dtype=np.float64)
        features = np.vstack([new_features, old]) if len(new_features) else old
        quality += [doc.get(TARGET) for doc in backlog]
    try:
        _predictions, model = forwarder.predict(features, quality, [str(i) for i in ids], request_id)
    except ForwardError as exc:
        FORWARD_FAILURES.inc()
        logger.warning("%d rows stay pending: %s", len(ids), exc)
        tracing.annotate({"rows.sent": len(ids), "rows.predicted": 0, "rows.pending": len(ids)})
        return {"sent": len(ids), "predicted": 0, "backfilled": 0, "pending": len(ids), "forward_error": str(exc)}
    updated, unstored = repo.mark_predicted(ids)
    ROWS_PREDICTED.inc(updated)
    ROWS_BACKFILLED.inc(len(backlog))
    summary = {"sent": len(ids), "predicted": updated, "backfilled": len(backlog), "model": model}
    if unstored:
        ROWS_UNSTORED.inc(len(unstored))
        logger.error("serving answered for %d rows whose prediction is not stored; they stay pending", len(unstored))
        summary |= {"pending": len(unstored), "unstored": len(unstored)}
    tracing.annotate({"rows.sent": len(ids), "rows.predicted": updated, "rows.backfilled": len(backlog),
                      "rows.pending": len(unstored), "model.name": model.get("name"),
                      "model.version": model.get("version")})
    return summary


def run_etl(
    run_id: str,
    *,
    repo: RowsRepository,
    forwarder: Forwarder,
    batch_size: int,
    backfill_limit: int,
    sweep_rows: int = 0,
    request_id: str | None = None,
) -> dict[str, Any]:
    """One scheduled run: generate a batch, store it (pending), sweep for orphans, forward it with the backlog."""
    frame = generate_frame(batch_size)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    quality = frame[TARGET].tolist()
    ids = repo.insert_batch(features, quality, source="generator", batch_id=run_id, pending=True)
    ROWS_INGESTED.labels("generator").inc(len(ids))
    swept = sweep(repo, rows=sweep_rows)
    summary = forward(
        repo, forwarder, new_ids=ids, new_features=features, new_quality=quality, backfill_limit=backfill_limit,
        request_id=request_id or run_id,
    )
    # batch_id: what every row of this run carries, so a row leads to its trace (the same tag as /ingest's).
    tracing.annotate({"rows.inserted": len(ids), "rows.swept": swept.get("swept"), "batch_id": run_id})
    return {"batch_id": run_id, "inserted": len(ids), **summary, **swept}


def sweep(repo: RowsRepository, *, rows: int) -> dict[str, Any]:
    """Re-mark rows with neither a pending mark nor a prediction, so this run's backfill sends them."""
    if rows <= 0:
        return {}
    try:
        result = repo.sweep(limit=rows)
    except PyMongoError as exc:
        # Housekeeping: the next run continues from the same watermark.
        logger.warning("orphan sweep skipped: %s: %s", type(exc).__name__, exc)
        return {"swept": 0, "sweep_error": type(exc).__name__}
    ROWS_SWEPT.inc(result.remarked)
    return {"swept": result.remarked}


def ingest(
    rows: list[Any],
    *,
    repo: RowsRepository,
    forwarder: Forwarder,
    request_id: str | None,
    source: str = "ingest",
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Validate every row, store the batch (all or nothing) and forward it to serving.

    With an idempotency key, a retry of the same rows stores the batch once: it writes what the first attempt
    did not and forwards the whole batch again (predictions already stored are kept, not repeated).
    """
    parsed = validate_rows(rows)
    if parsed.errors:
        raise ServiceError("INVALID_ROWS",
            f"{len(parsed.errors)} of {len(rows)} rows are invalid; nothing was stored. Fix them and send again.",
            details={"invalid_rows": parsed.errors[:100], "truncated": len(parsed.errors) > 100},
        )
    batch_id, ids, replay = new_batch_id(), None, False
    if idempotency_key is not None:
        try:
            claim = repo.claim_ingest_key(
                idempotency_key, fingerprint=fingerprint(parsed.features, parsed.quality), rows=len(parsed.quality)
            )
        except IdempotencyKeyReused:
            raise ServiceError("IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was first sent with other rows; nothing was stored. Use a new key for a "
                "new batch.",
            ) from None
        batch_id, ids, replay = claim.batch_id, claim.ids, claim.replay
    ids = repo.insert_batch(parsed.features, parsed.quality, source=source, batch_id=batch_id, pending=True, ids=ids)
    ROWS_INGESTED.labels(source).inc(len(ids))
    tracing.annotate({"rows.inserted": len(ids), "batch_id": batch_id})
    summary = forward(repo, forwarder, new_ids=ids, new_features=parsed.features, new_quality=parsed.quality,
                      backfill_limit=0, request_id=request_id)
    result = {"batch_id": batch_id, "inserted": len(ids), "ids": [str(i) for i in ids], **summary}
    return result | {"replayed": True} if replay else result


def fingerprint(features: np.ndarray, quality: list[int | None]) -> str:
    """A digest of a parsed batch: the same rows, however they were sent (JSON or CSV), give the same one."""
    digest = hashlib.sha256(np.ascontiguousarray(features, dtype=np.float64).tobytes())
    digest.update(json.dumps(quality).encode())
    return digest.hexdigest()
