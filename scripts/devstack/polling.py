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


# The most a job route waits in one request (mlstack_core.job_routes.MAX_WAIT_SECONDS).
JOB_ROUTE_MAX_WAIT = 20


def run_job_to_end(
    service_url: str, job: str, *, headers: dict[str, str], timeout: float = 120.0
) -> tuple[requests.Response, dict]:
    """Request a job run (waiting as long as the route allows), then follow it to its end.

    Returns the first answer (status 200 if the run ended within the route's wait, else 202) and the final record.
    """
    response = requests.post(
        f"{service_url}/jobs/{job}/run?wait={JOB_ROUTE_MAX_WAIT}", headers=headers, timeout=JOB_ROUTE_MAX_WAIT + 15
    )
    assert response.status_code in {200, 202}, response.text
    record = response.json()
    if record["status"] in {"queued", "running"}:
        status_url = f"{service_url}{record['status_url']}"

        def finished() -> dict | None:
            body = requests.get(status_url, timeout=15).json()
            return body if body["status"] not in {"queued", "running"} else None

        record = wait_until(finished, timeout, f"{job} run {record['run_id']} to finish", interval=0.5)
    return response, record
