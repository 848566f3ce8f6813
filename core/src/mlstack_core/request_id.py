"""Request ids: taken from Nginx's ``X-Request-ID`` (or made here) and echoed on every response."""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request

HEADER = "X-Request-ID"
# Ids travel into logs, downstream calls and Nginx's JSON error bodies (unescaped): accept only short, plain
# tokens. The three Nginx templates' `map $http_x_request_id` holds the same pattern (a test compares them).
PATTERN = r"[A-Za-z0-9._:-]{1,128}"
_VALID = re.compile(PATTERN)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return g.get("request_id") if g else None


def install_request_id(app: Flask) -> None:
    """Attach a request id to every request and response."""

    @app.before_request
    def _assign() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex

    @app.after_request
    def _echo(response):
        if g.get("request_id"):
            response.headers[HEADER] = g.request_id
        return response
