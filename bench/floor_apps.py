"""Lower bounds for the serving comparison: what the stack costs before any prediction work is done.

``flask_app``: a Flask app with no hooks whose one POST route parses the JSON body and answers a constant JSON.
``wsgi_app``: a bare WSGI callable that reads the body and answers a constant JSON (no framework at all).
Both run under Gunicorn (same config as our serving) behind the same Nginx, so their requests per second bound
what any Flask (or any Gunicorn) handler can reach on this machine; see bench/README.md.
"""

from __future__ import annotations

import json

from flask import Flask, jsonify, request

_ANSWER = json.dumps({"prediction": 6.0}).encode()


def flask_app() -> Flask:
    """Flask, one route, JSON in and out, nothing else."""
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        request.get_json()
        return jsonify(prediction=6.0)

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    return app


def wsgi_app(environ, start_response):
    """No framework: read the body, answer a constant."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_ANSWER)))])
    return [_ANSWER]
