"""Per-process shutdown callbacks, run by Gunicorn's worker_exit hook and at interpreter exit."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_callbacks: list[Callable[[], None]] = []
_lock = threading.Lock()
_atexit_registered = False


def on_shutdown(callback: Callable[[], None]) -> None:
    """Register a callback to run once when this process stops."""
    global _atexit_registered
    with _lock:
        _callbacks.append(callback)
        if not _atexit_registered:
            atexit.register(run_shutdown_callbacks)
            _atexit_registered = True


def run_shutdown_callbacks() -> None:
    """Run (and forget) the registered callbacks, newest first; one failing does not stop the others."""
    with _lock:
        callbacks = list(reversed(_callbacks))
        _callbacks.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("shutdown callback failed")
