"""How long a call to the model registry (MLflow) may take, by who makes it, and a cached read for requests.

Two budgets, one per kind of process:

- **Request workers** (Gunicorn marks them in its ``post_fork`` hook): every MLflow HTTP request gets
  ``REGISTRY_REQUEST_SECONDS`` (default 3 s) and no retry, and a read made for a client runs under
  :func:`bounded`, which gives up after that budget whatever the client library does. A slow or frozen
  registry costs a request a few seconds, never a worker for MLflow's defaults (120 s, 7 retries with backoff).
- **Everything else** (the scheduler process that trains, tests, scripts): 10 s a request and 2 retries, so a
  registry blip does not fail a training run, and a dead one fails it in well under a minute.

MLflow reads these as process-wide environment variables at each call, so the process decides, not the call.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
JOB_TIMEOUT_SECONDS = 10
JOB_RETRIES = 2
DEFAULT_REQUEST_SECONDS = 3.0

_request_worker = False
# A few threads per worker process: a call that outlives its budget keeps its thread until MLflow's own
# (short, retry-less) timeout ends it; later calls queue behind and still give up at their own deadline.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="registry-call")


class RegistryUnavailable(RuntimeError):
    """The registry did not answer within the budget, or failed; the message names the step, never the host."""


def mark_request_worker() -> None:
    """Called in each Gunicorn worker before the app loads: this process answers clients."""
    global _request_worker
    _request_worker = True


def configure_http(request_seconds: float) -> None:
    """Set MLflow's HTTP timeout and retries for this process (see the module docstring)."""
    if _request_worker:
        os.environ[TIMEOUT_ENV] = str(max(1, round(request_seconds)))
        os.environ[RETRIES_ENV] = "0"
    else:
        os.environ.setdefault(TIMEOUT_ENV, str(JOB_TIMEOUT_SECONDS))
        os.environ.setdefault(RETRIES_ENV, str(JOB_RETRIES))


def bounded(call: Callable[[], T], *, seconds: float, step: str) -> T:
    """Run ``call`` for at most ``seconds``; RegistryUnavailable naming ``step`` when it fails or takes longer."""
    future = _pool.submit(call)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued: never runs; running: ends with its own HTTP timeout
        logger.warning("registry call '%s' gave no answer within %.1f s", step, seconds)
        raise RegistryUnavailable(f"the model registry did not answer within {seconds:g} s ({step})") from None
    except Exception as exc:
        logger.warning("registry call '%s' failed: %s", step, exc)
        raise RegistryUnavailable(f"the model registry failed ({step}: {type(exc).__name__})") from exc


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A value read from the registry, when it was read, and whether it is older than the cache allows."""

    value: T
    read_at: dt.datetime
    stale: bool


class CachedRead(Generic[T]):
    """One registry read shared by the requests of a worker: fresh for ``ttl_seconds``, stale when it must be.

    Within the ttl every request gets the stored answer without calling the registry. After it, one bounded
    call refreshes it; if that call fails and an answer was read before, the old answer is served marked stale
    (the registry being down does not make what it last said unknown). With nothing read yet, the failure is
    raised as RegistryUnavailable.
    """

    def __init__(self, read: Callable[[], T], *, ttl_seconds: float, budget_seconds: float, step: str) -> None:
        self._read = read
        self.ttl_seconds = ttl_seconds
        self.budget_seconds = budget_seconds
        self.step = step
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at: dt.datetime | None = None
        self._read_mono = 0.0

    def get(self) -> Cached[T]:
        """The cached answer, refreshed first when older than the ttl."""
        with self._lock:
            if self._read_at is not None and time.monotonic() - self._read_mono < self.ttl_seconds:
                return Cached(self._value, self._read_at, stale=False)  # type: ignore[arg-type]
        try:
            value = bounded(self._read, seconds=self.budget_seconds, step=self.step)
        except RegistryUnavailable:
            with self._lock:
                if self._read_at is None:
                    raise
                return Cached(self._value, self._read_at, stale=True)  # type: ignore[arg-type]
        with self._lock:
            self._value, self._read_at, self._read_mono = value, dt.datetime.now(dt.UTC), time.monotonic()
            return Cached(value, self._read_at, stale=False)

    def invalidate(self) -> None:
        """Read again at the next get (after this worker changed what it says); the old answer stays the fallback."""
        with self._lock:
            self._read_mono = float("-inf")
