"""Gunicorn hooks that run the scheduler as a child of the master, beside the request workers, not inside one.

Why a child of the master: Gunicorn kills a worker whose request outlives ``timeout``; a scheduler inside a
worker died with it and left its run "running". The master is not a worker, so its child is never killed for
a slow request; the container keeps one command (``gunicorn``) and one process tree, the same natively and
in Docker. A thread in the master restarts the child if it dies; ``on_exit`` stops it with the master.

A service opts in from its gunicorn.conf.py: ``from mlstack_core.gunicorn_scheduler import on_exit, when_ready``.
This module imports nothing heavy: it is loaded by the master, which never imports the app.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

logger = logging.getLogger("gunicorn.error")

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_SECONDS = 60.0


class SchedulerSupervisor:
    """Starts ``python -m mlstack_core.jobs <app>`` and keeps it running until stopped."""

    def __init__(self, app_uri: str, *, grace_seconds: float) -> None:
        self.app_uri = app_uri
        self.grace_seconds = grace_seconds
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="scheduler-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        """The scheduler process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        """Start the scheduler process and its supervising thread."""
        self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = subprocess.Popen([sys.executable, "-m", "mlstack_core.jobs", self.app_uri])
            logger.info("scheduler process started (pid %s)", self._proc.pid)
            started = time.monotonic()
            # The master's SIGCHLD handler may reap the child first; wait() still returns once it is gone.
            self._proc.wait()
            _mark_dead(self._proc.pid)
            if self._stop.is_set():
                return
            if time.monotonic() - started > HEALTHY_SECONDS:
                failures = 0  # a crash after a long healthy run restarts at once, not after the longest backoff
            delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)]
            failures += 1
            logger.error("scheduler process %s exited; restarting in %.0f s", self._proc.pid, delay)
            self._stop.wait(delay)

    def stop(self) -> None:
        """Stop supervising, SIGTERM the scheduler, SIGKILL it after the grace period."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.grace_seconds)
        except subprocess.TimeoutExpired:
            logger.warning("scheduler process %s did not stop in %.0f s; killing it", proc.pid, self.grace_seconds)
            proc.kill()
            proc.wait(5)


def _mark_dead(pid: int) -> None:
    # Its live gauges must leave the merged /metrics view, as a dead worker's do.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


_supervisor: SchedulerSupervisor | None = None


def when_ready(server) -> None:
    """Gunicorn hook (master, once listening): start the scheduler process for the served app."""
    global _supervisor
    _supervisor = SchedulerSupervisor(server.app.app_uri, grace_seconds=float(server.cfg.graceful_timeout))
    _supervisor.start()


def on_exit(server) -> None:
    """Gunicorn hook (master, at exit): stop the scheduler process (it releases its lease)."""
    if _supervisor is not None:
        _supervisor.stop()
