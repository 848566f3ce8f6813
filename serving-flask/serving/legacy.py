"""The original template's serving endpoints: its paths, and its response keys where they differ from ours.

Original clients keep working unchanged: ``/getLengthData/`` answers ``lengthData``, ``/predictTestMLFlow/``
and ``/predictDummy/`` answer ``modelInfo`` and ``result``, ``/getLatestData/`` answers the newest rows as one
object keyed by row position (what the original's pandas ``to_dict("index")`` gave). New fields sit beside the
original keys; the new routes (serving.routes) have the new shapes.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.openapi import RowsQuery, document
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import bounded_int
from serving import routes, services
from serving.schemas import DummyAnswer, LatestDataAnswer, LengthDataAnswer, TestAnswer, WineRow

bp = Blueprint("serving_legacy", __name__)

ORIGINAL_LATEST_ROWS = 5

# Old path, same answer as the new route.
bp.add_url_rule("/getModelInfo/", endpoint="getModelInfo", view_func=routes.model_info, methods=["GET"])
bp.add_url_rule("/loadModel/", endpoint="loadModel", view_func=routes.reload_model, methods=["GET"])


def model_info_text(info: dict[str, Any]) -> str:
    """The original's ``modelInfo``: which model answered, in words."""
    return f"{info['name']} version {info['version']} ({info['alias']})"


@bp.post("/predictDummy/")
@document(json=WineRow, responses={200: DummyAnswer})
def predict_dummy():
    """One row -> ``{"modelInfo", "result"}`` (the original's one-row prediction)."""
    payload = routes.request_json()
    if not isinstance(payload, dict) or {"rows", "dataframe_records", "dataframe_split"} & set(payload):
        raise ServiceError("INVALID_BODY", "/predictDummy/ takes one row object; use /predict for batches.")
    result = routes.predict_payload(payload)
    info = result.model.info()
    return jsonify(modelInfo=model_info_text(info), result=float(result.values[0]), model=info)


@bp.get("/getLengthData/")
@document(responses={200: LengthDataAnswer})
def length_data():
    """``{"lengthData": N}``: the number of rows (with ``count`` and ``pending`` as on /data/count)."""
    repo = routes.rows_repository()
    count = repo.count()
    return jsonify(lengthData=count, count=count, pending=repo.count_pending())


@bp.get("/getLatestData/")
@document(query=RowsQuery, responses={200: LatestDataAnswer})
def latest_data():
    """The newest rows (default 5) as one object keyed by their position in the collection, oldest first."""
    n = bounded_int(request.args.get("n"), name="n", default=ORIGINAL_LATEST_ROWS, low=1, high=routes.MAX_LATEST)
    repo = routes.rows_repository()
    rows = services.latest_rows(repo, n)  # newest first
    # Positions as the original's DataFrame of the whole collection numbered them: the newest is count - 1.
    newest = max(repo.count(), len(rows)) - 1
    return jsonify({str(newest - i): row for i, row in enumerate(rows)})


@bp.get("/predictTestMLFlow/")
@document(responses={200: TestAnswer})
def predict_test():
    """Predict generated rows with known quality: ``modelInfo`` and ``result`` (the predictions) plus the error."""
    frame = generate_frame(20, seed=1234)
    model = services.served_model(routes.model_store())
    predictions = model.predict(frame[list(FEATURES)].to_numpy())
    info = model.info()
    mae = float(abs(predictions - frame[TARGET].to_numpy()).mean())
    return jsonify(modelInfo=model_info_text(info), result=str(predictions.tolist()), model=info, rows=len(frame),
                   mae=mae, predictions=predictions.tolist(), quality=frame[TARGET].tolist())
