"""Who may do what: the admin token for state-changing endpoints, the ETL's service token for row ids.

Two roles, two secrets (settings refuse equal ones): ``ADMIN_TOKEN`` for operators (jobs, ingest, reload),
``SERVICE_TOKEN`` for the ETL calling serving's /predict with its row ``ids`` and true ``quality``.
Both travel as ``Authorization: Bearer <token>``; comparisons are constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request

from mlstack_core.openapi import ADMIN_ATTR
from mlstack_core.service_errors import ServiceError

TOKEN_HEADER = "X-Admin-Token"  # noqa: S105 - a header name, not a secret


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get(TOKEN_HEADER)


def _matches(presented: str, expected: str) -> bool:
    # Constant-time comparison: the token must not leak through response timing.
    return hmac.compare_digest(presented.encode(), expected.encode())


def _service_token() -> str | None:
    token = getattr(current_app.config["MLSTACK_SETTINGS"], "service_token", None)
    return token.get_secret_value() if token is not None else None


def is_service_caller() -> bool:
    """True when the request carries this stack's SERVICE_TOKEN; no token or any other token is False."""
    presented, expected = _presented_token(), _service_token()
    return bool(presented and expected and _matches(presented, expected))


def require_service_caller(what: str) -> None:
    """Refuse with 401 (no token) or 403 (another token) unless the request carries the SERVICE_TOKEN."""
    presented = _presented_token()
    if not presented:
        raise ServiceError("AUTH_REQUIRED",
            f"{what} is accepted only from the ETL service: send its SERVICE_TOKEN as 'Authorization: Bearer "
            "<token>', or leave it out.",
        )
    expected = _service_token()
    if not expected or not _matches(presented, expected):
        raise ServiceError("AUTH_INVALID", f"The token is not this stack's SERVICE_TOKEN; {what} is refused.")


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the request with 401/403 unless it carries the service's admin token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        presented = _presented_token()
        if not presented:
            raise ServiceError("AUTH_REQUIRED",
                f"This endpoint changes state: send the admin token as 'Authorization: Bearer <token>' "
                f"or '{TOKEN_HEADER}: <token>'.",
            )
        expected = current_app.config["MLSTACK_SETTINGS"].admin_token.get_secret_value()
        if not _matches(presented, expected):
            raise ServiceError("AUTH_INVALID", "The admin token is not valid for this service.")
        return view(*args, **kwargs)

    setattr(wrapper, ADMIN_ATTR, True)  # the OpenAPI document attaches the admin security scheme
    return wrapper
