"""Domain errors: what went wrong, as a stable error code and a message a person can act on.

Services, repositories and validation raise ``ServiceError`` and import nothing from Flask. The HTTP edge
(``mlstack_core.errors``) maps each error code to its HTTP status in one table, as MLflow maps the error codes
of an ``MlflowException``; a route never picks a status for an error itself.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refused or failed operation: its error code (see ``mlstack_core.errors.HTTP_STATUS``) and message."""

    def __init__(self, error_code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.details = details
