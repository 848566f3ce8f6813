"""What the one-shot jobs of model management share: logging, required variables, a bounded wait for a server.

``create_bucket.py`` and ``provision_users.py`` run once per start (compose jobs, ``start-server.sh``, the native
harness) and must end: each step is retried until a deadline, then the job exits non-zero with the reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
RETRY_SECONDS = 2.0
# Values people leave in .env files by accident (the services refuse the same ones, mlstack_core.settings).
PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "admin", "token", "example"})
MIN_SECRET_LENGTH = 16


def job_logger(name: str) -> logging.Logger:
    """Configure logging once (LOG_LEVEL) and return the job's logger."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    return logging.getLogger(name)


def missing(names: tuple[str, ...]) -> list[str]:
    """The variables of ``names`` that are unset or empty."""
    return [name for name in names if not os.environ.get(name)]


def weak_secrets(names: tuple[str, ...]) -> list[str]:
    """The variables of ``names`` holding a placeholder or fewer than MIN_SECRET_LENGTH characters."""
    return [
        name for name in names
        if len(os.environ.get(name, "")) < MIN_SECRET_LENGTH or os.environ[name].strip().lower() in PLACEHOLDERS
    ]


def retry_until(
    step: Callable[[], T], *, timeout: float, what: str, retry_on: tuple[type[BaseException], ...],
    logger: logging.Logger,
) -> T:
    """Run ``step`` until it returns, retrying ``retry_on`` errors for up to ``timeout`` seconds (then re-raised)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except retry_on as exc:
            if time.monotonic() >= deadline:
                raise
            logger.info("%s not ready yet (%s); retrying", what, type(exc).__name__)
            time.sleep(RETRY_SECONDS)
