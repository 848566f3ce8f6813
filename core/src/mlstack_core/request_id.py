"""Request ids: taken from Nginx's ``X-Request-ID`` (or made here) and echoed on every response.

The id of the request being served lives in a context variable, so logging and outgoing calls read it without
importing Flask; :func:`mlstack_core.appkit.install_request_id` sets it around each request.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

HEADER = "X-Request-ID"
# Ids travel into logs, downstream calls and Nginx's JSON error bodies (unescaped): accept only short, plain
# tokens. The three Nginx templates' `map $http_x_request_id` holds the same pattern (a test compares them).
PATTERN = r"[A-Za-z0-9._:-]{1,128}"
_VALID = re.compile(PATTERN)
_CURRENT: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _CURRENT.get()


def accepted(incoming: str) -> str:
    """The incoming id when it is a plain short token, else a new one."""
    return incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex


def bind(request_id: str) -> Token:
    """Make `request_id` the current one (until :func:`unbind` with the returned token)."""
    return _CURRENT.set(request_id)


def unbind(token: Token) -> None:
    """Restore the request id that was current before :func:`bind`."""
    _CURRENT.reset(token)
