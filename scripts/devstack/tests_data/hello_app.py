"""A dependency-free WSGI app for the harness's tests: /health, and echo of the request id and Host."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer /health with 200 and anything else with the headers Nginx passed on, as JSON."""
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        body = b'{"status": "ok"}'
    else:
        body = json.dumps(
            {
                "path": path,
                "request_id": environ.get("HTTP_X_REQUEST_ID"),
                "host": environ.get("HTTP_HOST"),
                "pid": os.getpid(),
                "state_dir": os.environ.get("STATE_DIR"),
            }
        ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
