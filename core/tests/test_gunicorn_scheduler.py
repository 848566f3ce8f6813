"""The scheduler supervisor of the Gunicorn master restarts its child process when it dies, and stops it."""

from __future__ import annotations

from devstack.polling import wait_until
from mlstack_core.gunicorn_scheduler import SchedulerSupervisor


def test_a_dying_scheduler_process_is_restarted_and_stop_ends_it():
    # An app that cannot be imported: each scheduler process exits at once, as a crashing one would.
    supervisor = SchedulerSupervisor("no_such_module_here:create_app()", grace_seconds=5)
    seen: set[int] = set()

    def restarted() -> bool:
        if supervisor._proc is not None:
            seen.add(supervisor._proc.pid)
        return len(seen) >= 2

    supervisor.start()
    try:
        wait_until(restarted, 60, "a second scheduler process", interval=0.05)
    finally:
        supervisor.stop()
    supervisor._thread.join(timeout=40)
    assert not supervisor._thread.is_alive() and supervisor.pid is None
