"""The ETL's forward step against a real FerretDB, serving stood in: a row stops being pending only when its
prediction is stored, whatever serving answered."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import numpy as np
import pytest
from bson import ObjectId

from etl import services
from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.errors import http_status
from mlstack_core.predictions import PredictionBatch, batch_documents
from mlstack_core.rows import ORPHAN_GRACE, RowsRepository

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(fresh_db):
    return RowsRepository(fresh_db["rows"])


class StandInServing:
    """Answers like serving; stores the predictions (as serving does) only when told to."""

    def __init__(self, repo: RowsRepository, *, store: bool) -> None:
        self.repo = repo
        self.store = store
        self.calls: list[list[str]] = []

    def predict(self, features, quality, ids, request_id):
        self.calls.append(list(ids))
        predictions = np.full(len(ids), 5.0)
        if self.store:
            batch = PredictionBatch(features, predictions, {"name": "m", "version": "1", "run_id": "r"}, request_id,
                                    dt.datetime.now(dt.UTC), row_ids=list(ids), quality=list(quality))
            self.repo.predictions.insert(batch_documents(batch))
        return predictions.tolist(), {"version": "1"}


def run(repo, serving, **options):
    return services.run_etl(new_id(), repo=repo, forwarder=serving, batch_size=2, backfill_limit=100, **options)


def new_id() -> str:
    return uuid.uuid4().hex


def pending_ids(repo) -> set:
    return {doc["_id"] for doc in repo.pending_col.find({}, {"_id": 1})}


def test_rows_answered_without_a_stored_prediction_stay_pending_then_are_backfilled_once(repo):
    lying = StandInServing(repo, store=False)  # answers 200 but stores nothing (a serving bug, a lost write)
    result = run(repo, lying)
    assert result["predicted"] == 0 and result["unstored"] == 2
    assert len(pending_ids(repo)) == 2
    honest = StandInServing(repo, store=True)
    result = run(repo, honest)
    assert result["predicted"] == 4 and result["backfilled"] == 2 and "unstored" not in result
    assert pending_ids(repo) == set()
    assert repo.predictions.col.count_documents({}) == 4
    assert run(repo, honest)["backfilled"] == 0


def orphan_row(repo, created: dt.datetime) -> ObjectId:
    """A row written without a mark (older code, a mark deleted by hand); its _id carries its creation time."""
    row_id = ObjectId(ObjectId.from_datetime(created).binary[:4] + os.urandom(8))
    frame = generate_frame(1, seed=3)
    repo.col.insert_one({"_id": row_id, **frame[list(FEATURES)].iloc[0].to_dict(), TARGET: 6, "source": "old",
                         "batch_id": "legacy", "datetime_": created})
    return row_id


def test_a_run_sweeps_orphans_into_its_backfill_and_leaves_young_rows_alone(repo):
    now = dt.datetime.now(dt.UTC)
    old = orphan_row(repo, now - ORPHAN_GRACE * 2)
    young = orphan_row(repo, now)  # may be an insert in flight: its mark could still be coming
    serving = StandInServing(repo, store=True)
    result = run(repo, serving, sweep_rows=100)
    assert result["swept"] == 1 and result["backfilled"] == 1 and result["predicted"] == 3
    assert str(old) in serving.calls[-1] and str(young) not in serving.calls[-1]
    assert repo.predictions.col.count_documents({"_id": old}) == 1 and pending_ids(repo) == set()
    assert run(repo, serving, sweep_rows=100)["swept"] == 0
    assert repo.predictions.col.count_documents({"_id": old}) == 1


class FailingRows:
    """The rows collection's insert_many fails after `keep` documents (the database went away mid-batch)."""

    def __init__(self, col, keep: int) -> None:
        self._col, self._keep = col, keep

    def __getattr__(self, name):
        return getattr(self._col, name)

    def insert_many(self, docs, ordered=True):
        from pymongo.errors import AutoReconnect

        self._col.insert_many(docs[: self._keep], ordered=ordered)
        raise AutoReconnect("connection closed")


def test_an_ingest_retried_with_its_idempotency_key_stores_each_row_once(repo):
    rows = generate_frame(50, seed=5).to_dict("records")
    serving = StandInServing(repo, store=True)
    real = repo.col
    repo.col = FailingRows(real, keep=30)  # 30 of 50 rows written, then the database is gone
    with pytest.raises(Exception, match="connection closed"):
        services.ingest(rows, repo=repo, forwarder=serving, request_id="r1", idempotency_key="batch-7")
    repo.col = real
    assert real.count_documents({}) == 30 and len(pending_ids(repo)) == 50  # kept for the retry, marks first

    again = services.ingest(rows, repo=repo, forwarder=serving, request_id="r2", idempotency_key="batch-7")
    assert again["replayed"] is True and again["inserted"] == 50 and again["predicted"] == 50
    assert real.count_documents({}) == 50 and pending_ids(repo) == set()
    assert repo.predictions.col.count_documents({}) == 50

    third = services.ingest(rows, repo=repo, forwarder=serving, request_id="r3", idempotency_key="batch-7")
    assert third["batch_id"] == again["batch_id"] and third["ids"] == again["ids"]
    assert real.count_documents({}) == 50 and repo.predictions.col.count_documents({}) == 50
    fresh = services.ingest(rows, repo=repo, forwarder=serving, request_id="r4")  # no key: a new batch
    assert "replayed" not in fresh and real.count_documents({}) == 100


def test_an_idempotency_key_reused_for_other_rows_is_refused_and_stores_nothing(repo):
    serving = StandInServing(repo, store=True)
    first = generate_frame(5, seed=1).to_dict("records")
    services.ingest(first, repo=repo, forwarder=serving, request_id="r1", idempotency_key="k")
    other = generate_frame(5, seed=2).to_dict("records")
    with pytest.raises(services.ServiceError) as refused:
        services.ingest(other, repo=repo, forwarder=serving, request_id="r2", idempotency_key="k")
    assert http_status(refused.value) == 422 and refused.value.error_code == "IDEMPOTENCY_KEY_REUSED"
    assert repo.col.count_documents({}) == 5 and len(serving.calls) == 1


def test_keyed_row_ids_carry_the_first_attempts_time():
    from mlstack_core.rows import keyed_ids

    seconds = int(dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp())
    ids = keyed_ids("k", seconds, 3)
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert {i.generation_time for i in ids} == {dt.datetime(2026, 1, 2, tzinfo=dt.UTC)}
    assert keyed_ids("other", seconds, 3)[0] != ids[0]


def test_a_run_with_mongodb_refusing_connections_fails_on_the_server_selection_timeout():
    from pymongo.errors import ServerSelectionTimeoutError

    from devstack.ports import free_port
    from mlstack_core.jobs.runner import public_error
    from mlstack_core.mongo import MongoProvider

    # Nothing listens on the port: every connection is refused, as with MongoDB stopped.
    provider = MongoProvider(f"mongodb://127.0.0.1:{free_port()}/", "db", timeout_ms=300)
    try:
        assert provider.client().options.server_selection_timeout == 0.3  # MONGO_TIMEOUT_MS bounds the wait
        repo = RowsRepository(provider.db()["rows"])
        serving = StandInServing(repo, store=True)
        with pytest.raises(ServerSelectionTimeoutError) as failed:
            run(repo, serving)
        assert public_error(failed.value) == "MongoDB unavailable" and serving.calls == []
    finally:
        provider.close()
