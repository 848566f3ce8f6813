"""Outbound HTTP between services: bounded timeouts, bounded retries, request id propagated."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlstack_core.request_id import HEADER as REQUEST_ID_HEADER

DEFAULT_TIMEOUT = (2.0, 10.0)  # (connect, read) seconds


def make_session(*, retries: int = 2, backoff: float = 0.3) -> requests.Session:
    """A session that retries connection failures and 502/503/504 a bounded number of times.

    POST is retried too: every call between our services is idempotent (serving stores a forwarded row's
    prediction under the row's id, a second insert of it is a no-op; reload is a reload).
    """
    retry = Retry(
        total=retries,
        connect=retries,
        read=0,  # a read timeout means the other side may still be working: do not pile on
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "POST", "PUT"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=8)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def forward_headers(request_id: str | None, token: str | None = None) -> dict[str, str]:
    """Headers for a call to another service of the stack (token: the admin or service token it needs)."""
    headers = {}
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers
