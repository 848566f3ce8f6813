"""Faults on a running NativeStack, by process id only: stop/resume, kill/restart, worker and leader kills, load.

Everything here signals a pid the harness started (a server's process, its children, or a Gunicorn worker of
the master it started); nothing looks processes up by name. Every wait and every load loop is bounded.

- :func:`paused` stops a server's processes with SIGSTOP and resumes them with SIGCONT ("stopped N s"): its
  sockets stay open and connections hang, as with a stalled host, rather than being refused.
- :func:`kill_and_restart` SIGKILLs a server's main process and starts it again on the same port and data.
- :func:`kill_worker` SIGKILLs one Gunicorn worker; the master forks a new one.
- :func:`scheduler_leader_pid` finds the process that runs a service's scheduler.
- :class:`LoadDriver` posts to an endpoint from a thread for a set time, counting outcomes with timestamps.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devstack.polling import wait_until
from devstack.procs import descendants
from devstack.servers import GunicornApp, _Server
from devstack.stack import NativeStack

log = logging.getLogger(__name__)

# How long a restarted Gunicorn may take to have its full set of workers answering again.
RESPAWN_TIMEOUT = 90.0


def server_pids(server: _Server) -> list[int]:
    """The server's main process and everything it forked (e.g. MLflow's uvicorn worker), main process first."""
    if server.pid is None:
        raise RuntimeError(f"{server.name} is not running")
    return descendants(server.pid)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_stopped(pids: list[int], timeout: float = 2.0) -> None:
    """Wait (bounded) until every thread of these processes is in the stopped state: SIGSTOP is delivered
    asynchronously, and a thread running on the other core can still answer a request sent right after kill()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for pid in pids:
            for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
                with contextlib.suppress(OSError):
                    states.append(stat.read_text().rpartition(")")[2].split()[0])
        if all(state in {"T", "t", "Z", "X"} for state in states):
            return
        time.sleep(0.01)


@dataclass
class Pause:
    """A running pause: when it began and which processes it stopped."""

    name: str
    pids: list[int]
    began: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def seconds(self) -> float:
        """How long the processes were (or have so far been) stopped."""
        return (self.ended or time.monotonic()) - self.began


@contextlib.contextmanager
def paused(server: _Server, seconds: float) -> Iterator[Pause]:
    """SIGSTOP the server's processes, run the body, wait until `seconds` have passed, then SIGCONT them.

    The processes are resumed even when the body raises, so a failing test never leaves a frozen server.
    """
    pause = Pause(server.name, server_pids(server))
    _signal(pause.pids, signal.SIGSTOP)
    _wait_stopped(pause.pids)
    log.info("%s stopped (SIGSTOP pids %s) for %.0f s", server.name, pause.pids, seconds)
    try:
        yield pause
        remaining = seconds - pause.seconds
        if remaining > 0:
            time.sleep(remaining)
    finally:
        _signal(pause.pids, signal.SIGCONT)
        pause.ended = time.monotonic()
        log.info("%s resumed after %.1f s", server.name, pause.seconds)


def kill_and_restart(server: _Server, *, down_seconds: float = 0.0) -> float:
    """SIGKILL the server's main process, optionally leave it down, start it again (same port, same data).

    Returns the seconds from the kill until the restarted server answered its readiness check.
    """
    pid = server.pid
    if pid is None:
        raise RuntimeError(f"{server.name} is not running")
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    log.info("%s killed (SIGKILL pid %s)", server.name, pid)
    wait_until(lambda: not server.running, 30, f"{server.name} pid {pid} to die", interval=0.05)
    server.stop()  # reaps the dead process, ends what it forked, closes its log handle
    if down_seconds:
        time.sleep(down_seconds)
    server.start()
    return time.monotonic() - killed


def kill_worker(app: GunicornApp, pid: int | None = None, *, respawn_timeout: float = RESPAWN_TIMEOUT) -> int:
    """SIGKILL one Gunicorn worker (the first one when pid is None); wait until the master has replaced it."""
    workers = app.pids()
    if not workers:
        raise RuntimeError(f"{app.name} has no workers")
    victim = workers[0] if pid is None else pid
    if victim not in workers:
        raise ValueError(f"pid {victim} is not a worker of {app.name} ({workers})")
    os.kill(victim, signal.SIGKILL)
    log.info("%s worker %s killed (SIGKILL)", app.name, victim)
    wait_until(
        lambda: victim not in app.pids() and len(app.pids()) >= app.workers,
        respawn_timeout, f"{app.name}'s master to replace worker {victim}",
    )
    return victim


_HOLDER_PID = re.compile(r"^[^:]*:(\d+)(?::|$)")


def holder_pid(holder: str) -> int | None:
    """The pid in a lease holder name (``host:pid:nonce``, see mlstack_core.locks.holder_id), if it has one."""
    match = _HOLDER_PID.match(holder or "")
    return int(match.group(1)) if match else None


def service_pids(stack: NativeStack, service: str) -> set[int]:
    """Every process the stack runs for a service: its Gunicorn master, workers and anything they forked."""
    roots = [server.pid for server in stack.servers if server.pid and server.name.startswith(service)]
    return {pid for root in roots for pid in descendants(root)}


def scheduler_leader_pid(stack: NativeStack, service: str, *, timeout: float = 60.0) -> int:
    """The pid of the process running the service's scheduler, found from what the leader itself records.

    First the MongoDB leases (``locks`` documents whose holder names a live pid of this service and whose
    name mentions the service or a scheduler/leader), then the leader's lock file in STATE_DIR (its content is
    the leader's pid). Either way the pid must belong to the service's own process tree.
    """
    app = stack.apps[service]

    def find() -> int | None:
        pids = service_pids(stack, service)
        with contextlib.closing(stack.ferretdb.client()) as client:  # type: ignore[union-attr]
            now = dt.datetime.now(dt.UTC)
            for doc in client[stack.mongo_db]["locks"].find({}):
                name = str(doc.get("_id", ""))
                expires = doc.get("expires_at")
                if expires is not None and expires.replace(tzinfo=dt.UTC) < now:
                    continue
                pid = holder_pid(str(doc.get("holder", "")))
                if pid in pids and any(word in name for word in (service, "scheduler", "leader")):
                    return pid
        for lock in sorted(Path(app.state_dir).glob("*leader*.lock")):
            with contextlib.suppress(OSError, ValueError):
                pid = int(lock.read_text().strip() or 0)
                if pid in pids:
                    return pid
        return None

    return wait_until(find, timeout, f"the scheduler leader of {service}", interval=0.5)


# ------------------------------------------------------------------ jobs through the public API


def admin_headers(stack: NativeStack) -> dict[str, str]:
    """The admin token header for the stack's services."""
    return {"Authorization": f"Bearer {stack.admin_token}"}


def request_run(stack: NativeStack, service: str, job: str | None = None) -> str:
    """Queue a manual run of the service's job through its Nginx; returns the run id."""
    url = f"{stack.urls[service]}/jobs/{job or service}/run"
    response = requests.post(url, headers=admin_headers(stack), timeout=30)
    if response.status_code != 202:
        raise AssertionError(f"POST {url}: {response.status_code} {response.text[:300]}")
    return response.json()["run_id"]


def run_record(stack: NativeStack, service: str, run_id: str) -> dict[str, Any] | None:
    """A run's record from the service's API (None when it cannot answer right now)."""
    try:
        response = requests.get(f"{stack.urls[service]}/jobs/runs/{run_id}", timeout=15)
    except requests.RequestException:
        return None
    return response.json() if response.status_code in (200, 202) else None


def wait_run(stack: NativeStack, service: str, run_id: str, *, statuses: set[str] | None = None,
             timeout: float = 180.0) -> dict[str, Any]:
    """Poll a run until its status is one of `statuses` (default: finished); returns the record."""
    wanted = statuses or {"succeeded", "failed"}

    def reached() -> dict[str, Any] | None:
        record = run_record(stack, service, run_id)
        return record if record and record.get("status") in wanted else None

    return wait_until(reached, timeout, f"{service} run {run_id} to be {'/'.join(sorted(wanted))}", interval=0.3)


def pause_schedule(stack: NativeStack, service: str, job: str | None = None) -> None:
    """Pause a service's schedule, so only the runs a test asks for happen."""
    url = f"{stack.urls[service]}/jobs/{job or service}/pause"
    response = requests.post(url, headers=admin_headers(stack), timeout=30)
    if response.status_code != 200:
        raise AssertionError(f"POST {url}: {response.status_code} {response.text[:300]}")


# ------------------------------------------------------------------ load


class LoadDriver(threading.Thread):
    """Posts one body to a URL in a loop for at most `seconds` and `max_requests`, recording every outcome.

    An outcome is the HTTP status, or the exception's class name when no answer came. Each is kept with the
    monotonic time it was observed, so a test can ask what was answered during a fault window.
    """

    def __init__(
        self,
        url: str,
        body: Any,
        *,
        seconds: float,
        max_requests: int = 100_000,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        pace_seconds: float = 0.0,
        name: str = "load",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.url = url
        self.body = body
        self.seconds = seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.pace_seconds = pace_seconds
        self.events: list[tuple[float, float, int | str]] = []  # (sent, answered, outcome)
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with requests.Session() as session:
            for _ in range(self.max_requests):
                if self._stop_event.is_set() or time.monotonic() >= deadline:
                    return
                sent = time.monotonic()
                try:
                    outcome: int | str = session.post(
                        self.url, json=self.body, headers=self.headers, timeout=self.timeout
                    ).status_code
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                    self._stop_event.wait(0.05)  # the server is gone: do not spin
                self.events.append((sent, time.monotonic(), outcome))
                if self.pace_seconds:
                    self._stop_event.wait(self.pace_seconds)

    def stop(self, timeout: float | None = None) -> LoadDriver:
        """Ask the loop to end and wait for the request in flight (at most its timeout)."""
        self._stop_event.set()
        self.join(self.timeout + 5 if timeout is None else timeout)
        return self

    def outcomes(self, since: float | None = None, until: float | None = None) -> collections.Counter:
        """Outcomes of the requests sent in [since, until) (all when not given)."""
        return collections.Counter(
            outcome for sent, _, outcome in list(self.events)
            if (since is None or sent >= since) and (until is None or sent < until)
        )

    def longest_seconds(self) -> float:
        """The longest time a request waited for its outcome."""
        return max((answered - sent for sent, answered, _ in list(self.events)), default=0.0)


def wait_answering(url: str, *, timeout: float = 120.0, ok: Callable[[requests.Response], bool] | None = None) -> float:
    """Wait until GET url answers 200 (or `ok`); returns the seconds it took."""
    began = time.monotonic()
    check = ok or (lambda response: response.status_code == 200)
    wait_until(lambda: check(requests.get(url, timeout=5)), timeout, f"{url} to answer", interval=0.5)
    return time.monotonic() - began
