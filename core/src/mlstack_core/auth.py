"""Admin token check for every state-changing endpoint."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request

from mlstack_core.errors import ApiError

TOKEN_HEADER = "X-Admin-Token"  # noqa: S105 - a header name, not a secret


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get(TOKEN_HEADER)


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the request with 401/403 unless it carries the service's admin token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        presented = _presented_token()
        if not presented:
            raise ApiError(
                401,
                "AUTH_REQUIRED",
                f"This endpoint changes state: send the admin token as 'Authorization: Bearer <token>' "
                f"or '{TOKEN_HEADER}: <token>'.",
            )
        expected = current_app.config["MLSTACK_SETTINGS"].admin_token.get_secret_value()
        # Constant-time comparison: the token must not leak through response timing.
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise ApiError(403, "AUTH_INVALID", "The admin token is not valid for this service.")
        return view(*args, **kwargs)

    return wrapper
