"""The MongoDB lease against a real FerretDB: one holder at a time, takeover after expiry with a higher epoch."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from mlstack_core.locks import LOCKS_COLLECTION, LeaseKeeper, MongoLease

pytestmark = pytest.mark.integration


@pytest.fixture
def db(fresh_db):
    return fresh_db


def test_one_holder_and_renewal(db):
    first = MongoLease(db, "job", ttl_seconds=30, holder="a")
    second = MongoLease(db, "job", ttl_seconds=30, holder="b")
    assert first.acquire() and first.epoch == 1
    assert not second.acquire() and second.epoch is None
    assert first.acquire() and first.epoch == 1  # a renewal keeps the epoch
    assert first.held() and not second.held()


def test_takeover_after_expiry_raises_the_epoch_and_fences_the_old_holder(db):
    old = MongoLease(db, "job", ttl_seconds=0.5, holder="old")
    new = MongoLease(db, "job", ttl_seconds=30, holder="new")
    assert old.acquire()
    time.sleep(0.8)
    assert new.acquire() and new.epoch == 2
    assert not old.held()
    assert not old.acquire()  # its renewal is refused: the lease is at a newer epoch
    assert old.epoch is None


def test_release_frees_the_lease_and_keeps_the_epoch_growing(db):
    first = MongoLease(db, "job", ttl_seconds=30, holder="a")
    assert first.acquire()
    first.release()
    doc = first.current()
    assert doc["epoch"] == 1 and doc["expires_at"] < dt.datetime.now(dt.UTC)
    second = MongoLease(db, "job", ttl_seconds=30, holder="b")
    assert second.acquire() and second.epoch == 2


def test_concurrent_takeovers_have_exactly_one_winner(db):
    for round_ in range(5):
        name = f"race-{round_}"
        if round_ % 2:  # an expired lease, not a missing one
            db[LOCKS_COLLECTION].insert_one(
                {"_id": f"{name}#7", "lease": name, "holder": "dead", "epoch": 7, "expires_at": dt.datetime(2000, 1, 1)}
            )
        leases = [MongoLease(db, name, ttl_seconds=30, holder=f"h{i}") for i in range(6)]
        barrier = threading.Barrier(len(leases))
        results: list[bool] = [False] * len(leases)

        def contend(i: int, leases=leases, barrier=barrier, results=results) -> None:
            barrier.wait()
            results[i] = leases[i].acquire()

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(leases))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(results) == 1, results
        winner = leases[results.index(True)]
        assert winner.epoch == (8 if round_ % 2 else 1)


def test_keeper_renews_while_held(db):
    lease = MongoLease(db, "job", ttl_seconds=0.6, holder="a")
    assert lease.acquire()
    with LeaseKeeper(lease):
        time.sleep(1.5)  # more than twice the TTL: held only because the keeper renewed it
        assert lease.held()
        assert not MongoLease(db, "job", ttl_seconds=5, holder="b").acquire()
