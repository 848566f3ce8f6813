"""Leases: one holder at a time across processes and hosts (MongoDB), or across the processes of one host (flock).

The MongoDB lease is the one lease implementation the services use (scheduler leader, training, seeding). Its
``epoch`` is a fencing token: it grows by one on every takeover, so a record written under an older epoch is
known to come from a holder that lost the lease. Expiry compares wall clocks of the hosts involved: they are
assumed NTP-synchronised to well under a second, far below the TTLs used here.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

logger = logging.getLogger(__name__)

LOCKS_COLLECTION = "locks"
# A released tenure keeps its document (so the next epoch is higher) with an expiry in the past.
_RELEASED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def holder_id() -> str:
    """A name for this process that is unique across hosts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class MongoLease:
    """A named lease with an expiry and a fencing epoch, built on inserts with a unique _id only.

    FerretDB (SQLite backend) applies a conditional update as read-then-write, so two racing
    ``find_one_and_update`` calls can both match; an insert of a duplicate ``_id`` is refused atomically by
    both servers. So each tenure is its own document ``<name>#<epoch>``: taking over an expired lease is
    inserting the next epoch's document (exactly one racer succeeds), and only the holder writes its own
    document (renewal, release). The lease is the highest epoch's document; it is held while unexpired.
    """

    KEEP_EPOCHS = 3  # older tenure documents are pruned by the next holder

    def __init__(self, db: Database, name: str, *, ttl_seconds: float, holder: str | None = None) -> None:
        self._col = db[LOCKS_COLLECTION]
        self.name = name
        self.ttl = dt.timedelta(seconds=ttl_seconds)
        self.holder = holder or holder_id()
        self.epoch: int | None = None  # the fencing token of our tenure; None while we do not hold it

    def _id(self, epoch: int) -> str:
        return f"{self.name}#{epoch:012d}"

    def current(self) -> dict | None:
        """The newest tenure document (held when its expires_at is in the future), None if never taken."""
        return self._col.find_one({"lease": self.name}, sort=[("epoch", -1)])

    def acquire(self) -> bool:
        """Renew the lease if we hold it, else take it over when free or expired; False when held by another."""
        now = dt.datetime.now(dt.UTC)
        if self.epoch is not None:
            self._col.update_one(
                {"_id": self._id(self.epoch), "holder": self.holder},
                {"$set": {"expires_at": now + self.ttl, "renewed_at": now}},
            )
            # Checked after the renewal: a takeover that read our tenure as expired has inserted the next epoch.
            if self._col.find_one({"_id": self._id(self.epoch + 1)}, {"_id": 1}) is None:
                return True
            logger.warning("lease %s (epoch %s) was taken over from %s", self.name, self.epoch, self.holder)
            self.epoch = None
        head = self.current()
        if head is not None and _aware(head["expires_at"]) > now:
            return False
        epoch = int(head["epoch"]) + 1 if head is not None else 1
        try:
            self._col.insert_one({"_id": self._id(epoch), "lease": self.name, "epoch": epoch, "holder": self.holder,
                                  "acquired_at": now, "renewed_at": now, "expires_at": now + self.ttl})
        except DuplicateKeyError:
            return False  # another contender took this epoch first
        self.epoch = epoch
        self._col.delete_many({"lease": self.name, "epoch": {"$lt": epoch - self.KEEP_EPOCHS}})
        return True

    def held(self) -> bool:
        """True while the newest tenure is ours and unexpired (a read, no renewal)."""
        if self.epoch is None:
            return False
        head = self.current()
        return bool(
            head and head.get("holder") == self.holder and head.get("epoch") == self.epoch
            and _aware(head["expires_at"]) > dt.datetime.now(dt.UTC)
        )

    def release(self) -> None:
        """Give the lease up if we hold it: our tenure expires now, so the next contender takes it at once."""
        if self.epoch is None:
            return
        self._col.update_one(
            {"_id": self._id(self.epoch), "holder": self.holder},
            {"$set": {"expires_at": _RELEASED, "released_at": dt.datetime.now(dt.UTC)}},
        )
        self.epoch = None

    def __enter__(self) -> MongoLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LeaseKeeper:
    """Renews a held lease every ttl/3 in a thread, so it expires soon after its holder dies, not after a run."""

    def __init__(self, lease: MongoLease, *, on_lost: Callable[[], None] | None = None) -> None:
        self._lease = lease
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{lease.name}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = self._lease.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                still_ours = self._lease.acquire()
            except Exception as exc:  # MongoDB down: the next renewal may still succeed before expiry
                logger.warning("lease %s not renewed: %s", self._lease.name, type(exc).__name__)
                continue
            if not still_ours:
                if self._on_lost is not None:
                    self._on_lost()
                return


def _aware(value: dt.datetime) -> dt.datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class LeaderElector:
    """Host-local leadership: keeps trying to take an exclusive file lock; the holder runs on_elected once.

    For work that must run once per host (one process among a service's Gunicorn workers); the kernel drops the
    lock when the holder dies. Work that must run once across hosts uses a MongoLease instead.
    """

    RETRY_SECONDS = 2.0

    def __init__(self, lock_path: Path, on_elected: Callable[[], None]) -> None:
        self._path = lock_path
        self._on_elected = on_elected
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader-elector", daemon=True)

    @property
    def is_leader(self) -> bool:
        """True in the process that holds the lock."""
        return self._fd is not None

    def start(self) -> None:
        """Start competing for leadership in the background."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop competing (the lock goes with the process)."""
        self._stop.set()

    def _try_lock(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._try_lock():
                logger.info("pid %s is the leader for %s", os.getpid(), self._path.name)
                try:
                    self._on_elected()
                except Exception:
                    logger.exception("leader start-up failed")
                return
            self._stop.wait(self.RETRY_SECONDS)
