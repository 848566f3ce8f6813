"""Telling serving to reload the champion now, instead of at its next registry poll."""

from __future__ import annotations

import logging
from typing import Any

import requests

from mlstack_core.http import forward_headers, make_session
from training.metrics import NUDGE_FAILURES

logger = logging.getLogger(__name__)


class ServingNudger:
    """Calls serving's reload endpoint (LOADMODELAPI) with its admin token; never raises."""

    def __init__(self, url: str, *, token: str, timeout: float, retries: int) -> None:
        self.url = url
        self._token = token
        # Serving loads the model inside the request: a short connect timeout, a read timeout that allows it.
        self._timeout = (2.0, timeout)
        self._session = make_session(retries=retries)

    def nudge(self, request_id: str | None) -> dict[str, Any]:
        """Ask serving to reload; failures are logged and counted, serving's own polling picks the alias up."""
        try:
            response = self._session.get(
                self.url, headers=forward_headers(request_id, self._token), timeout=self._timeout
            )
        except requests.RequestException as exc:
            return self._failed(f"serving unreachable: {type(exc).__name__}")
        if response.status_code != 200:
            return self._failed(f"serving answered HTTP {response.status_code}", response.status_code)
        try:
            model = response.json().get("model")
        except ValueError:
            model = None
        return {"ok": True, "status": 200, "model": model}

    def _failed(self, error: str, status: int | None = None) -> dict[str, Any]:
        NUDGE_FAILURES.inc()
        logger.warning("serving reload nudge to %s failed: %s (serving polls the registry itself)", self.url, error)
        return {"ok": False, "status": status, "error": error}
