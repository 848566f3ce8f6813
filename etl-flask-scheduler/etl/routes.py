"""HTTP endpoints of the ETL service (jobs come from mlstack_core.job_routes)."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, Field

from etl import services
from mlstack_core.appkit import get_mongo, get_settings
from mlstack_core.auth import require_admin
from mlstack_core.csv_rows import parse_csv
from mlstack_core.openapi import IndexAnswer, document
from mlstack_core.row_schemas import RowsPayload
from mlstack_core.rows import RowsRepository
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import extract_rows

bp = Blueprint("etl", __name__)

# The one definition of a valid Idempotency-Key: checked by _idempotency_key, shown in the OpenAPI document.
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class IngestHeaders(BaseModel):
    """``Idempotency-Key``: a retry with the same key writes only the rows still missing."""

    idempotency_key: str | None = Field(None, alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY.pattern,
                                        examples=["3f1c9a2e-ingest-1"])


class EtlIndex(IndexAnswer):
    """``GET /`` of the ETL: its batch size and where it sends rows to be predicted."""

    batch_size: int
    predict_api: str


class IngestAnswer(BaseModel):
    """``POST /ingest``: the stored batch and what serving predicted of it (``forward_error`` when it could not)."""

    batch_id: str
    inserted: int
    ids: list[str]
    sent: int
    predicted: int
    backfilled: int
    pending: int | None = Field(None, description="rows still waiting for a prediction (the next run sends them)")
    replayed: bool | None = Field(None, description="true for a retry with an Idempotency-Key already used")


def _repo() -> RowsRepository:
    settings = get_settings()
    return RowsRepository(get_mongo().db()[settings.mongo_collection], predictions=settings.predictions_collection)


@bp.get("/")
@document(responses={200: EtlIndex})
def index():
    """What this service is and its endpoints."""
    settings = get_settings()
    return jsonify(
        service="etl",
        batch_size=settings.etl_batch_size,
        predict_api=settings.predict_api,
        endpoints={
            "POST /ingest": "JSON rows or a CSV upload (admin token); all rows valid or nothing stored",
            "GET /jobs/etl, GET /getEtlJob/": "the schedule",
            "PUT /jobs/etl, POST /modifyEtlJob/": "change the schedule (admin token)",
            "POST /jobs/etl/pause|resume, GET /pauseEtlJob/ /resumeEtlJob/": "pause/resume (admin token)",
            "POST /jobs/etl/run, GET /manualEtl/": "run now, 202 + run id; ?wait=N waits (admin token)",
            "GET /jobs/runs/<run_id>": "a run's status",
            "GET /health, GET /ready, GET /metrics": "probes and Prometheus metrics",
            "GET /openapi.json, GET /docs": "this API's contract (OpenAPI 3.1) and Swagger UI",
        },
    )


@bp.post("/ingest")
@document(json=RowsPayload, headers=IngestHeaders, responses={201: IngestAnswer})
@require_admin
def ingest():
    """Extract data from outside: JSON rows, a CSV body (text/csv) or a CSV file upload (field 'file')."""
    settings = get_settings()
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ServiceError("NO_FILE", "The multipart upload has no 'file' field; send the CSV as 'file'.")
        rows = parse_csv(upload.read(), max_rows=settings.max_ingest_rows)
    elif request.mimetype == "text/csv":
        rows = parse_csv(request.get_data(), max_rows=settings.max_ingest_rows)
    elif request.is_json:
        rows, _ = extract_rows(request.get_json())
    else:
        raise ServiceError("UNSUPPORTED_MEDIA_TYPE",
            "Send JSON (application/json), CSV (text/csv) or a multipart upload with a 'file' field.",
        )
    if len(rows) > settings.max_ingest_rows:
        raise ServiceError("TOO_MANY_ROWS", f"At most {settings.max_ingest_rows} rows per request.")
    result = services.ingest(
        rows, repo=_repo(), forwarder=current_app.extensions["forwarder"], request_id=g.request_id,
        idempotency_key=_idempotency_key(),
    )
    return jsonify(result), 201


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ServiceError("INVALID_IDEMPOTENCY_KEY",
            "Idempotency-Key must be 1 to 128 characters of letters, digits and . _ : - (a UUID works).",
        )
    return key
