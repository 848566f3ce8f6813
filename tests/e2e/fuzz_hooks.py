"""Our checks and our caller for schemathesis (``st run`` loads this file from ``SCHEMATHESIS_HOOKS``).

The caller comes from the environment: ``MLSTACK_FUZZ_CALLER`` (anonymous, admin or wrong-token) and
``MLSTACK_FUZZ_TOKEN`` (the token it sends, none for anonymous). The checks:

- ``json_error_shape``: every 4xx/5xx is the JSON error shape (mlstack_core.openapi.ErrorBody), with the
  request id of the answer, unless the document gives that exact status another body (/ready's 503);
- ``admin_token_enforced``: an operation the document puts behind the admin token answers 401 AUTH_REQUIRED
  without a token and 403 AUTH_INVALID with a wrong one, and neither with the right one;
- ``undeclared_method_refused``: schemathesis's own ``unsupported_method`` check, except that Nginx's 405 for
  TRACE (refused by Nginx itself on every path, so it cannot say per path what is allowed) needs no Allow
  header; its body is checked by ``json_error_shape`` like every other error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import unsupported_method

CALLER = os.environ.get("MLSTACK_FUZZ_CALLER", "anonymous")
TOKEN = os.environ.get("MLSTACK_FUZZ_TOKEN", "")
TOKEN_HEADERS = {"authorization", "x-admin-token"}
ERROR_KEYS = {"error_code", "message", "details", "request_id"}
# Refusals Nginx gives before the app, and so before its token check, sees the request.
NGINX_REFUSALS = {(400, "BAD_REQUEST"), (405, "METHOD_NOT_ALLOWED"), (413, "PAYLOAD_TOO_LARGE"),
                  (414, "URI_TOO_LONG")}


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    """Send the caller's token, and only it: the document names both token headers, which get made-up values."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in TOKEN_HEADERS}
    if TOKEN:
        headers["Authorization"] = f"Bearer {TOKEN}"
    case.headers = headers


def _error_code(response: Any) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("error_code") if isinstance(body, dict) else None


@schemathesis.check
def json_error_shape(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx is {error_code, message, details?, request_id} with the answer's X-Request-ID."""
    if response.status_code < 400:
        return
    documented = case.operation.definition.raw.get("responses", {}).get(str(response.status_code))
    if documented is not None and "ErrorBody" not in json.dumps(documented):
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"error answered as {content_type!r}: {response.text[:200]}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) <= ERROR_KEYS, f"not the error shape: {response.text[:300]}"
    assert isinstance(body.get("error_code"), str) and body["error_code"].isupper(), response.text[:300]
    assert isinstance(body.get("message"), str) and body["message"], response.text[:300]
    request_id = response.headers.get("x-request-id", [None])
    request_id = request_id[0] if isinstance(request_id, list) else request_id
    assert body.get("request_id") == request_id, f"request_id {body.get('request_id')!r} != header {request_id!r}"


def requires_admin(operation: Any) -> bool:
    """True when the document puts the operation behind the admin token."""
    return {"adminToken": []} in operation.definition.raw.get("security", [])


@schemathesis.check
def admin_token_enforced(ctx: Any, response: Any, case: Any) -> None:
    """Behind the admin token: 401 without a token, 403 with a wrong one, neither with the right one."""
    if (response.request.method or "").upper() != case.operation.method.upper() or not requires_admin(case.operation):
        return  # an undeclared-method probe (405 before any view), or an open operation
    code = _error_code(response) if response.status_code >= 400 else None
    if (response.status_code, code) in NGINX_REFUSALS:
        return  # refused before the request reached the app
    got = (response.status_code, code)
    if CALLER == "anonymous":
        assert got == (401, "AUTH_REQUIRED"), f"no token: expected 401 AUTH_REQUIRED, got {got}"
    elif CALLER == "wrong-token":
        assert got == (403, "AUTH_INVALID"), f"wrong token: expected 403 AUTH_INVALID, got {got}"
    else:
        assert response.status_code not in (401, 403), f"the admin token was refused: {got}"


@schemathesis.check
def undeclared_method_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's unsupported_method, without the Allow header for Nginx's own 405 to TRACE."""
    if (response.request.method or "").upper() == "TRACE":
        return None
    return unsupported_method(ctx, response, case)
