"""HTTP endpoints of the serving service; the original template's paths and shapes are in serving.legacy."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from mlstack_core.appkit import get_mongo, get_settings
from mlstack_core.auth import is_service_caller, require_admin, require_service_caller
from mlstack_core.data.generator import FEATURES
from mlstack_core.openapi import RowsQuery, document, service_token_optional
from mlstack_core.predictions import PredictionsRepository
from mlstack_core.rows import RowsRepository
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import bounded_int
from serving import services
from serving.model_store import ModelStore
from serving.schemas import (
    CountAnswer,
    LatestRowsAnswer,
    ModelStatusAnswer,
    PredictAnswer,
    PredictBody,
    ReloadAnswer,
    ServingIndex,
)

bp = Blueprint("serving", __name__)

MAX_LATEST = 1000


def model_store() -> ModelStore:
    return current_app.extensions["model_store"]


def rows_repository() -> RowsRepository:
    settings = get_settings()
    return RowsRepository(get_mongo().db()[settings.mongo_collection], predictions=settings.predictions_collection)


def _predictions() -> PredictionsRepository:
    settings = get_settings()
    return PredictionsRepository(
        get_mongo().db()[settings.predictions_collection], insert_timeout=settings.prediction_store_timeout_seconds
    )


def predict_payload(payload):
    """Predict a request body as /predict does (the legacy routes share it)."""
    # Row ids decide which stored prediction a row of the ETL gets: only the ETL's service token may send them.
    if isinstance(payload, dict) and "ids" in payload:
        require_service_caller("Row ids")
        service = True
    else:
        service = is_service_caller()
    return services.predict(
        payload, store=model_store(), writer=current_app.extensions.get("prediction_writer"), predictions=_predictions,
        service_caller=service, request_id=g.request_id,
    )


def request_json():
    """The request's JSON body."""
    # JsonRequest answers a body that is not JSON, too deep or invalid with its own 4xx.
    return request.get_json()


@bp.get("/")
@document(responses={200: ServingIndex})
def index():
    """What this service is and its endpoints."""
    return jsonify(
        service="serving",
        model=model_store().model.info() if model_store().model else None,
        endpoints={
            "POST /predict": "one row object, a list of rows, {rows: [...]}, dataframe_records or dataframe_split "
                             "(ids: ETL service token only)",
            "POST /predictDummy/": "one row -> {modelInfo, result} (original template)",
            "GET /model, GET /getModelInfo/": "the model this worker serves",
            "POST /model/reload, GET /loadModel/": "reload the champion now (admin token)",
            "GET /data/latest?n=10, GET /getLatestData/": "newest rows with their predictions",
            "GET /data/count, GET /getLengthData/": "number of rows",
            "GET /predictTestMLFlow/": "predict generated test rows and report the error",
            "POST /invocations, GET /ping, GET /version": "MLflow's scoring protocol (as mlflow models serve)",
            "GET /health, GET /ready, GET /metrics": "probes and Prometheus metrics",
            "GET /openapi.json, GET /docs": "this API's contract (OpenAPI 3.1) and Swagger UI",
        },
        features=list(FEATURES),
    )


@bp.post("/predict")
@document(json=PredictBody, responses={200: PredictAnswer})
@service_token_optional
def predict():
    """Predict one row or a batch; the answer names the model version that made it."""
    result = predict_payload(request_json())
    body = {"model": result.model.info(), "request_id": g.request_id}
    if result.single:
        body["prediction"] = float(result.values[0])
    else:
        body["predictions"] = result.values.tolist()
    if result.stored is not None:
        body["stored"] = result.stored
    return jsonify(body)


@bp.get("/model")
@document(responses={200: ModelStatusAnswer})
def model_info():
    """The model this worker serves, and when it last checked the registry."""
    store = model_store()
    return jsonify(
        model=store.model.info() if store.model else None,
        alias=store.alias,
        name=store.name,
        last_check=store.last_check.isoformat() if store.last_check else None,
        last_error=store.last_error,
        refused=store.refused,
        poll_seconds=store.poll_seconds,
    )


@bp.post("/model/reload")
@document(responses={200: ReloadAnswer})
@require_admin
def reload_model():
    """Reload the champion in this worker now and make every other worker check within a second."""
    store = model_store()
    changed = store.refresh()
    store.nudge_all_workers()
    if store.model is None:
        raise ServiceError("MODEL_NOT_READY", f"Nothing to load: {store.last_error}.")
    return jsonify(reloaded=changed, model=store.model.info())


@bp.get("/data/latest")
@document(query=RowsQuery, responses={200: LatestRowsAnswer})
def latest_data():
    """The newest rows (default 10, at most 1000) with their predictions."""
    n = bounded_int(request.args.get("n"), name="n", default=10, low=1, high=MAX_LATEST)
    return jsonify(rows=services.latest_rows(rows_repository(), n))


@bp.get("/data/count")
@document(responses={200: CountAnswer})
def data_count():
    """Number of rows stored, and how many still wait for a prediction."""
    repo = rows_repository()
    return jsonify(count=repo.count(), pending=repo.count_pending())
