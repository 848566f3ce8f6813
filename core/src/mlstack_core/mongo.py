"""MongoDB access: one client per process (pymongo is not fork-safe), bounded timeouts everywhere."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

logger = logging.getLogger(__name__)


class MongoProvider:
    """Creates the client lazily in the process that uses it and recreates it after a fork."""

    def __init__(self, uri: str, db_name: str, *, timeout_ms: int = 2000, app_name: str = "mlstack") -> None:
        self._uri = uri
        self._db_name = db_name
        self._timeout_ms = timeout_ms
        self._app_name = app_name
        self._client: MongoClient | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def db_name(self) -> str:
        """Name of the application database."""
        return self._db_name

    def client(self) -> MongoClient:
        """The process's client; a forked child gets a fresh one instead of the parent's sockets."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = MongoClient(
                        self._uri,
                        appname=self._app_name,
                        serverSelectionTimeoutMS=self._timeout_ms,
                        connectTimeoutMS=self._timeout_ms,
                        # A stuck query must not hold a worker forever; large reads use their own limits.
                        socketTimeoutMS=max(self._timeout_ms * 10, 20000),
                        tz_aware=True,
                        connect=False,
                    )
                    self._pid = pid
        return self._client

    def db(self) -> Database:
        """The application database."""
        return self.client()[self._db_name]

    def close(self) -> None:
        """Close this process's client (safe to call when none was made)."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None
            self._pid = None


NAMESPACE_NOT_FOUND = 26


def collection_count(collection: Collection) -> int:
    """Documents in a collection from its statistics (``$collStats`` count), without reading them.

    ``estimated_document_count`` is metadata on MongoDB but a full scan on FerretDB (measured: 4.7 s per 100k
    rows), while ``$collStats`` is metadata on both (0.13 s there). Both are exact on a cleanly running server;
    a sharded collection answers one document per shard, summed here. A collection that does not exist has 0.
    """
    try:
        return sum(int(doc.get("count", 0)) for doc in collection.aggregate([{"$collStats": {"count": {}}}]))
    except OperationFailure as exc:
        if exc.code == NAMESPACE_NOT_FOUND:
            return 0
        logger.info("$collStats unavailable on %s (%s), counting with estimated_document_count", collection.name, exc)
        return collection.estimated_document_count()


def public_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A Mongo document made JSON-friendly (ObjectId and datetimes as strings)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "_id":
            out["id"] = str(value)
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
        elif type(value).__name__ == "ObjectId":
            out[key] = str(value)
        else:
            out[key] = value
    return out
