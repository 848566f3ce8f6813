"""Gunicorn hooks that run the scheduler as a child of the master, beside the request workers, not inside one.

Why a child of the master: Gunicorn kills a worker whose request outlives ``timeout``; a scheduler inside a
worker died with it and left its run "running". The master is not a worker, so its child is never killed for
a slow request; the container keeps one command (``gunicorn``) and one process tree, the same natively and
in Docker. A thread in the master restarts the child if it dies; ``on_exit`` stops it with the master.

A service opts in from its gunicorn.conf.py: ``from mlstack_core.gunicorn_scheduler import on_exit, when_ready``.
This module imports nothing heavy: it is loaded by the master, which never imports the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger("gunicorn.error")

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_SECONDS = 60.0


def spawn(argv: list[str]) -> int:
    """Start ``argv`` with posix_spawn and return its pid; the master's inheritable descriptors stay behind.

    Not subprocess.Popen: its fork+exec reports exec failures through a pipe it reads to EOF. The supervisor
    runs in a thread of the master, and a Gunicorn worker forked by the master's main thread meanwhile inherits
    that pipe's write end and keeps it open: Popen then blocked until the worker died, and a scheduler process
    that died meanwhile was never restarted. posix_spawn (glibc: clone with CLONE_VFORK, no pipe) leaves
    nothing a concurrent fork could hold. Gunicorn marks its listening sockets inheritable, hence the closes.
    """
    inherited = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own descriptor, already closed
            if fd > 2 and os.get_inheritable(fd):
                inherited.append((os.POSIX_SPAWN_CLOSE, fd))
    return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=inherited)


def reap(pid: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` s (None: for ever) for the child ``pid`` to exit; True once it has."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:
            return True  # the master's SIGCHLD handler waits for any child, and reaped it first
        if done:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class SchedulerSupervisor:
    """Starts ``python -m mlstack_core.jobs <app>`` and keeps it running until stopped."""

    def __init__(self, app_uri: str, *, grace_seconds: float) -> None:
        self.app_uri = app_uri
        self.grace_seconds = grace_seconds
        self._stop = threading.Event()
        self._pid: int | None = None  # of the running scheduler process; None once it has exited
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="scheduler-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        """The scheduler process id while it runs."""
        return self._pid

    def start(self) -> None:
        """Start the scheduler process and its supervising thread."""
        self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                pid = self._pid = spawn([sys.executable, "-m", "mlstack_core.jobs", self.app_uri])
            logger.info("scheduler process started (pid %s)", pid)
            started = time.monotonic()
            reap(pid, None)
            with self._lock:
                self._pid = None
            _mark_dead(pid)
            if self._stop.is_set():
                return
            if time.monotonic() - started > HEALTHY_SECONDS:
                failures = 0  # a crash after a long healthy run restarts at once, not after the longest backoff
            delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)]
            failures += 1
            logger.error("scheduler process %s exited; restarting in %.0f s", pid, delay)
            self._stop.wait(delay)

    def stop(self) -> None:
        """Stop supervising, SIGTERM the scheduler, SIGKILL it after the grace period."""
        with self._lock:
            self._stop.set()
            pid = self._pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not reap(pid, self.grace_seconds):
            logger.warning("scheduler process %s did not stop in %.0f s; killing it", pid, self.grace_seconds)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid, 5)


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
