"""One JSON error shape for every 4xx/5xx: ``{"error_code", "message", "details"?, "request_id"}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException

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


class ApiError(Exception):
    """An error a route raises to answer with a JSON body and an HTTP status."""

    def __init__(self, status: int, error_code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details


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
    """Map ApiError, Werkzeug HTTP errors and unexpected exceptions to the JSON error shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(error_body(exc.error_code, exc.message, exc.details)), exc.status

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
