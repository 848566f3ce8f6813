"""Child processes with a log file, a bounded readiness wait and a stop that always cleans up."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Loaded once in the parent: the pre-exec hook must not import or allocate much between fork and exec.
_LIBC: Any = None
with contextlib.suppress(OSError, AttributeError):
    _LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Pre-exec hook: ask the kernel to SIGTERM the child when its parent dies (e.g. pytest is killed)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children of every thread, recursively), pid first."""
    found = [pid]
    i = 0
    while i < len(found):
        current = found[i]
        i += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children if int(c) not in found)
    return found


class ProcessError(RuntimeError):
    """A managed process died or did not become ready in time; the message ends with its log's tail."""


class ManagedProcess:
    """One server process in its own process group, logging to a file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stop_grace: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self.stop_grace = stop_grace
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """The process id while started (also after it died, until stop())."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended."""
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        """Start the process (no-op if it is already running)."""
        if self.running:
            return
        self.stop()  # reap a dead previous run and close its log handle
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restart keeps the previous run's lines; the tail shown on failure starts at this run.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log_file.tell()
        header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(self.argv)}\n"
        self._log_file.write(header.encode())
        self._log_file.flush()
        self._log_offset = self._log_file.tell()
        log.debug("starting %s: %s", self.name, " ".join(self.argv))
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Own process group: stop() can signal the server and every helper it forked, and a Ctrl-C
                # in the terminal reaches only the harness, which then stops servers in order.
                start_new_session=True,
                preexec_fn=_die_with_parent if self._use_death_signal() else None,
            )
        except OSError:
            self._close_log()
            raise

    def _use_death_signal(self) -> bool:
        # The kernel sends it when the forking *thread* exits, so only a main-thread start may ask for it.
        return self.die_with_parent and threading.current_thread() is threading.main_thread()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote to its log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], object], timeout: float, interval: float = 0.1) -> None:
        """Call check() until it returns truthy without raising; fail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        last_error = "not checked yet"
        while True:
            if self._proc is None:
                raise ProcessError(f"{self.name} was not started")
            code = self._proc.poll()
            if code is not None:
                raise ProcessError(
                    f"{self.name} exited with code {code} before it was ready; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            try:
                if check():
                    return
                last_error = "check returned false"
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} not ready after {timeout:.0f}s (last check: {last_error}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL what is left after the grace period; safe to call twice."""
        proc = self._proc
        if proc is None:
            self._close_log()
            return None
        grace = self.stop_grace if grace is None else grace
        pgid = proc.pid  # start_new_session made the child its group's leader
        if proc.poll() is None:
            self._signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, grace)
                self._signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # Helpers the leader forked (workers, job runners) may outlive it; they share its process group.
        self._reap_group(pgid, grace)
        code = proc.poll()
        self._proc = None
        self._close_log()
        return code

    def _reap_group(self, pgid: int, grace: float) -> None:
        """Terminate group members that outlived the leader, bounded by grace seconds."""
        if not self._group_alive(pgid):
            return
        self._signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + min(grace, 5.0)
        while time.monotonic() < deadline:
            if not self._group_alive(pgid):
                return
            time.sleep(0.05)
        self._signal_group(pgid, signal.SIGKILL)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
