"""Request ids: taken from Nginx's ``X-Request-ID`` (or made here) and echoed on every response."""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request

HEADER = "X-Request-ID"
# Ids travel into logs and downstream calls: accept only short, plain tokens.
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return g.get("request_id") if g else None


def install_request_id(app: Flask) -> None:
    """Attach a request id to every request and response."""

    @app.before_request
    def _assign() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _echo(response):
        if g.get("request_id"):
            response.headers[HEADER] = g.request_id
        return response
