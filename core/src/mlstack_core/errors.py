"""One JSON error shape for every 4xx/5xx: ``{"error_code", "message", "details"?, "request_id"}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException

from mlstack_core.service_errors import ServiceError

logger = logging.getLogger(__name__)

# Werkzeug's own errors (404, 405, 413...) get stable codes instead of their HTML pages.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


# The HTTP status of every domain error code (mlstack_core.service_errors.ServiceError): the one place where a
# refusal becomes a status. A code missing here is our bug and answers 500 (a unit test checks every raised code).
HTTP_STATUS = {
    # The request itself is malformed: fix it and send it again.
    "INVALID_BODY": 400,
    "INVALID_JSON": 400,
    "JSON_TOO_DEEP": 400,
    "INVALID_PARAMETER": 400,
    "INVALID_QUERY": 400,
    "INVALID_IDS": 400,
    "INVALID_CSV": 400,
    "INVALID_IDEMPOTENCY_KEY": 400,
    "NO_FILE": 400,
    "NO_ROWS": 400,
    # Well-formed, but the values are refused.
    "INVALID_ROWS": 422,
    "INVALID_SCHEDULE": 422,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "TOO_MANY_ROWS": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    # Who is asking.
    "AUTH_REQUIRED": 401,
    "AUTH_INVALID": 403,
    # What is asked for.
    "RUN_NOT_FOUND": 404,
    "JOB_NOT_FOUND": 404,
    "TRAINING_IN_PROGRESS": 409,
    "NO_PREVIOUS_CHAMPION": 409,
    # A part of the stack cannot do it right now: retry later.
    "MODEL_NOT_READY": 503,
    "PREDICTIONS_NOT_STORED": 503,
    "REGISTRY_UNAVAILABLE": 503,
}


def http_status(error: ServiceError) -> int:
    """The HTTP status of a domain error (500 for a code this table lacks)."""
    return HTTP_STATUS.get(error.error_code, 500)


def error_body(error_code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error shape, with the request id so a person can find the log lines."""
    body: dict[str, Any] = {"error_code": error_code, "message": message}
    if details is not None:
        body["details"] = details
    request_id = g.get("request_id") if g else None
    if request_id:
        body["request_id"] = request_id
    return body


def register_error_handlers(app: Flask) -> None:
    """Map domain errors, Werkzeug HTTP errors and unexpected exceptions to the JSON error shape."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        status = http_status(exc)
        if status == 500:
            logger.error("error code %s has no HTTP status in mlstack_core.errors.HTTP_STATUS", exc.error_code)
        return jsonify(error_body(exc.error_code, exc.message, exc.details)), status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "HTTP_ERROR")
        message = exc.description or exc.name
        if status == 404:
            message = "No such endpoint. GET / lists the endpoints of this service."
        elif status == 405:
            message = f"Method not allowed here. Allowed: {', '.join(sorted(exc.valid_methods or []))}."
        elif status == 413:
            message = "Request body too large for this endpoint; send fewer rows per request."
        response = jsonify(error_body(code, message))
        if status == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response, status

    @app.errorhandler(PyMongoError)
    def _database_down(exc: PyMongoError):
        # Every Mongo failure a route did not handle itself: bounded timeouts got us here fast.
        logger.warning("MongoDB error: %s", exc)
        body = error_body(
            "DATABASE_UNAVAILABLE", "MongoDB is not reachable right now; nothing was changed. Retry later."
        )
        return jsonify(body), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Log the traceback for operators; the client only learns that it failed and the request id.
        logger.exception("unhandled error")
        return jsonify(error_body("INTERNAL_ERROR", "Internal error; see the service log for this request id.")), 500
