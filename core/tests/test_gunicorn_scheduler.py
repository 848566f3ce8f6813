"""The scheduler supervisor of the Gunicorn master restarts its child process when it dies, and stops it."""

from __future__ import annotations

import os
import threading
import time

from devstack.polling import wait_until
from mlstack_core import gunicorn_scheduler
from mlstack_core.gunicorn_scheduler import SchedulerSupervisor


def test_a_dying_scheduler_process_is_restarted_and_stop_ends_it():
    # An app that cannot be imported: each scheduler process exits at once, as a crashing one would.
    supervisor = SchedulerSupervisor("no_such_module_here:create_app()", grace_seconds=5)
    seen: set[int] = set()

    def restarted() -> bool:
        if supervisor.pid is not None:
            seen.add(supervisor.pid)
        return len(seen) >= 2

    supervisor.start()
    try:
        wait_until(restarted, 60, "a second scheduler process", interval=0.05)
    finally:
        supervisor.stop()
    supervisor._thread.join(timeout=40)
    assert not supervisor._thread.is_alive() and supervisor.pid is None


def test_restarts_go_on_while_another_thread_forks(monkeypatch):
    # Gunicorn's master forks workers in its main thread while the supervisor thread starts schedulers. Each
    # child forked here holds every descriptor open at that moment until the test ends, as a live worker would:
    # a start that waited on a pipe such a child inherited (subprocess.Popen's exec-error pipe) never returned.
    monkeypatch.setattr(gunicorn_scheduler, "RESTART_BACKOFF_SECONDS", (0.05,))
    release_read, release_write = os.pipe()
    stop = threading.Event()
    children: list[int] = []

    def fork_like_a_master() -> None:
        while not stop.is_set() and len(children) < 2000:
            pid = os.fork()
            if pid == 0:  # the child: hold what it inherited until the test ends
                os.close(release_write)
                os.read(release_read, 1)
                os._exit(0)
            children.append(pid)
            time.sleep(0.003)

    supervisor = SchedulerSupervisor("no_such_module_here:create_app()", grace_seconds=5)
    seen: set[int] = set()

    def restarted() -> bool:
        if supervisor.pid is not None:
            seen.add(supervisor.pid)
        return len(seen) >= 4

    forker = threading.Thread(target=fork_like_a_master, daemon=True)
    forker.start()
    supervisor.start()
    try:
        wait_until(restarted, 60, "four scheduler processes while another thread forks", interval=0.01)
    finally:
        stop.set()
        forker.join()
        os.close(release_write)
        for pid in children:
            os.waitpid(pid, 0)
        supervisor.stop()
    assert len(seen) >= 4
