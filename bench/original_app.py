"""A faithful reproduction of the original template's ``/predictDummy/`` path, kept for comparison only.

The model is the registered version loaded as a pyfunc; every request builds a one-row pandas DataFrame from
the JSON body, calls predict and answers ``{"modelInfo": str(model), "result": prediction[0]}``. Gunicorn sync
workers run it (``gunicorn "bench.original_app:create_app()"``). Nothing here belongs in the product.
"""

from __future__ import annotations

import os

import mlflow
import pandas as pd
from flask import Flask, jsonify, request


def create_app() -> Flask:
    """The original app: the model is loaded once per worker, from MODEL_URI."""
    app = Flask(__name__)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(os.environ["MODEL_URI"])

    @app.route("/predictDummy/", methods=["POST"])
    def predict_dummy():
        data = pd.DataFrame(request.json, index=[0])
        prediction = model.predict(data)
        return jsonify({"modelInfo": str(model), "result": prediction[0]})

    @app.route("/health")
    def health():
        return jsonify(status="ok")

    return app
