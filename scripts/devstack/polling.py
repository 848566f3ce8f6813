"""Bounded polling for tests and scripts: wait for a condition with a deadline, fail naming what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.3) -> T:
    """Poll predicate until it returns something truthy; AssertionError naming `what` after `timeout` s.

    Connection errors count as "not yet": services may still be starting or restarting.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (requests.RequestException, ConnectionError) as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
