"""Leases in MongoDB: one holder at a time across processes and replicas, released on expiry."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

logger = logging.getLogger(__name__)

LOCKS_COLLECTION = "locks"


def holder_id() -> str:
    """A name for this process that is unique across hosts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class MongoLease:
    """A named lease document; acquire() is atomic thanks to the unique _id."""

    def __init__(self, db: Database, name: str, *, ttl_seconds: float, holder: str | None = None) -> None:
        self._col = db[LOCKS_COLLECTION]
        self.name = name
        self.ttl = dt.timedelta(seconds=ttl_seconds)
        self.holder = holder or holder_id()

    def acquire(self) -> bool:
        """Take or renew the lease; False when someone else holds an unexpired one."""
        now = dt.datetime.now(dt.UTC)
        try:
            self._col.update_one(
                {"_id": self.name, "$or": [{"expires_at": {"$lt": now}}, {"holder": self.holder}]},
                {"$set": {"holder": self.holder, "expires_at": now + self.ttl, "renewed_at": now}},
                upsert=True,
            )
        except DuplicateKeyError:
            # The document exists and is held by someone else: the upsert's insert lost the race.
            return False
        return True

    def release(self) -> None:
        """Give the lease up if we still hold it."""
        self._col.delete_one({"_id": self.name, "holder": self.holder})

    def __enter__(self) -> MongoLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
