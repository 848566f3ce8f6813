"""MLflow's scoring protocol, so serving can stand in for ``mlflow models serve``: /invocations, /ping, /version.

``POST /invocations`` takes what MLflow's scoring server takes for a model with named columns: JSON with exactly
one of ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (records or columns; ``params`` is
accepted and ignored, as MLflow ignores it for scikit-learn), or a ``text/csv`` body with a header line. It
answers ``{"predictions": [...]}`` and nothing else, as MLflow does. Rows go through the same validation,
model and (buffered, anonymous) prediction storage as /predict; errors are the service's JSON error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request

from mlstack_core.csv_rows import parse_csv
from mlstack_core.openapi import document
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import MAX_ROWS_PER_REQUEST, extract_rows
from serving import routes, services
from serving.schemas import InvocationsAnswer, InvocationsBody

bp = Blueprint("scoring", __name__)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")


@bp.post("/invocations")
@document(json=InvocationsBody, responses={200: InvocationsAnswer})
def invocations():
    """Predict rows sent as MLflow's scoring server takes them; ``{"predictions": [...]}``."""
    if request.mimetype == "text/csv":
        rows = parse_csv(request.get_data(), max_rows=MAX_ROWS_PER_REQUEST)
    elif request.mimetype == "application/json":
        rows = rows_of(routes.request_json())
    else:
        raise ServiceError("UNSUPPORTED_MEDIA_TYPE",
                       f"Send {' or '.join(CONTENT_TYPES)} (got {request.mimetype or 'no Content-Type'}).")
    result = routes.predict_payload({"rows": rows})
    return jsonify(predictions=result.values.tolist())


def rows_of(payload: Any) -> list[Any]:
    """Row objects from one of MLflow's four JSON input formats."""
    if not isinstance(payload, Mapping):
        raise ServiceError("INVALID_BODY", f"Send a JSON object with one of {', '.join(FORMATS)}.")
    found = [key for key in FORMATS if key in payload]
    if len(found) != 1:
        raise ServiceError("INVALID_BODY",
                       f"Send exactly one of {', '.join(FORMATS)} (got {len(found)} of them).")
    key = found[0]
    if key in ("dataframe_split", "dataframe_records"):
        return extract_rows({key: payload[key]})[0]
    return _tensor_rows(key, payload[key])


def _tensor_rows(key: str, value: Any) -> list[Any]:
    # TF-serving style: a list of row objects, or one object of equally long columns.
    if isinstance(value, list):
        if not all(isinstance(row, Mapping) for row in value):
            raise ServiceError("INVALID_BODY", f"'{key}' must list row objects with named features "
                           "(this model's signature has named columns), or be an object of columns.")
        return value
    if isinstance(value, Mapping):
        columns = list(value.values())
        if not columns or not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) != 1:
            raise ServiceError("INVALID_BODY", f"'{key}' as columns must map each feature to a list, "
                           "all of the same length.")
        if len(columns[0]) > MAX_ROWS_PER_REQUEST:
            raise ServiceError("TOO_MANY_ROWS", f"At most {MAX_ROWS_PER_REQUEST} rows per request; split the batch.")
        names = list(value)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    raise ServiceError("INVALID_BODY", f"'{key}' must be a list of row objects or an object of columns.")


@bp.get("/ping")
def ping():
    """200 once a model is served (MLflow's health check), else 503 saying why."""
    services.served_model(routes.model_store())
    return Response("\n", status=200, mimetype="application/json")


@bp.get("/version")
def version():
    """The MLflow version this server speaks the scoring protocol of (as ``mlflow models serve`` answers)."""
    from mlflow.version import VERSION

    return Response(VERSION, status=200, mimetype="application/json")
