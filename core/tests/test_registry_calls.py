"""Registry calls: a bounded call gives up at its budget, a cached read serves fresh, then stale, then fails."""

from __future__ import annotations

import os
import threading

import pytest

from mlstack_core import registry_calls
from mlstack_core.registry_calls import CachedRead, RegistryUnavailable, bounded, configure_http


def test_bounded_returns_the_answer_and_wraps_failures_without_their_text():
    assert bounded(lambda: 42, seconds=1, step="read") == 42

    def broken():
        raise ConnectionError("http://10.1.2.3:5000 refused")

    with pytest.raises(RegistryUnavailable) as caught:
        bounded(broken, seconds=1, step="read the aliases")
    assert "read the aliases: ConnectionError" in str(caught.value) and "10.1.2.3" not in str(caught.value)


def test_bounded_gives_up_on_a_call_that_does_not_return():
    release = threading.Event()
    try:
        with pytest.raises(RegistryUnavailable, match=r"did not answer within 0\.2 s"):
            bounded(lambda: release.wait(30), seconds=0.2, step="read")
    finally:
        release.set()


def test_cached_read_is_fresh_within_its_ttl_then_stale_while_the_registry_fails():
    answers: list[object] = [{"v": 1}]

    def read():
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    reads = CachedRead(read, ttl_seconds=3600, budget_seconds=1, step="read")
    first = reads.get()
    assert first.value == {"v": 1} and not first.stale
    answers[0] = {"v": 2}
    assert reads.get().value == {"v": 1}  # within the ttl: not read again
    reads.invalidate()
    assert reads.get().value == {"v": 2}
    answers[0] = ConnectionError("down")
    reads.invalidate()
    stale = reads.get()
    assert stale.value == {"v": 2} and stale.stale and stale.read_at is not None


def test_cached_read_with_nothing_read_yet_raises():
    def down():
        raise TimeoutError("slow")

    with pytest.raises(RegistryUnavailable):
        CachedRead(down, ttl_seconds=5, budget_seconds=1, step="read").get()


def test_a_request_worker_gets_no_retries_and_the_request_timeout(monkeypatch):
    monkeypatch.delenv(registry_calls.TIMEOUT_ENV, raising=False)
    monkeypatch.delenv(registry_calls.RETRIES_ENV, raising=False)
    monkeypatch.setattr(registry_calls, "_request_worker", False)
    configure_http(3)
    assert (os.environ[registry_calls.TIMEOUT_ENV], os.environ[registry_calls.RETRIES_ENV]) == ("10", "2")
    registry_calls.mark_request_worker()
    configure_http(3)
    assert (os.environ[registry_calls.TIMEOUT_ENV], os.environ[registry_calls.RETRIES_ENV]) == ("3", "0")
