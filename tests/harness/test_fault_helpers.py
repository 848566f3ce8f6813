"""The fault helpers and the invariant checker against real servers: each can see what it is meant to see.

The checker is shown to catch every kind of planted violation (a lost row, a duplicate prediction, a run left
running, a version's files left behind), so a green fault suite means the invariants held, not that the
checker looked away.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pymongo
import pytest
from bson import ObjectId
from pymongo.errors import PyMongoError

from devstack.faults import LoadDriver, holder_pid, kill_and_restart, paused
from devstack.invariants import InvariantChecker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def infra_stack(native_stack_factory):
    """Only FerretDB, S3 and MLflow (the session's), under a database of its own; no apps."""
    return native_stack_factory(services=(), shared_infra=True, mongo_db=f"INV{uuid.uuid4().hex[:8]}")


@pytest.fixture
def db(infra_stack):
    """The stack's database, emptied of rows, marks, predictions and run records before the test."""
    with pymongo.MongoClient(infra_stack.mongo_uri) as client:
        database = client[infra_stack.mongo_db]
        for name in ("dummy_col_demo", "dummy_col_demo_pending", "predictions", "job_runs"):
            database[name].delete_many({})
        yield database


def test_paused_server_hangs_clients_and_resumes(ferretdb):
    with ferretdb.client() as client:
        client.admin.command("ping")
    quick = {"serverSelectionTimeoutMS": 800, "socketTimeoutMS": 800, "connectTimeoutMS": 800}
    with paused(ferretdb, seconds=2) as pause, ferretdb.client(**quick) as client, pytest.raises(PyMongoError):
        client.admin.command("ping")
    assert pause.seconds >= 2
    with ferretdb.client() as client:
        assert client.admin.command("ping")["ok"] == 1


def test_kill_and_restart_keeps_port_and_data(ferretdb):
    marker = uuid.uuid4().hex
    with ferretdb.client() as client:
        client["HARNESS"]["kill"].insert_one({"marker": marker})
    old_pid, port = ferretdb.pid, ferretdb.port
    kill_and_restart(ferretdb)
    assert ferretdb.pid != old_pid and ferretdb.port == port
    with ferretdb.client() as client:
        assert client["HARNESS"]["kill"].find_one({"marker": marker}) is not None


def test_load_driver_is_bounded_and_counts_outcomes(mlflow_server):
    driver = LoadDriver(f"{mlflow_server.uri}/no-such-endpoint", {"x": 1}, seconds=30, max_requests=5)
    began = time.monotonic()
    driver.start()
    driver.join(30)
    assert not driver.is_alive() and time.monotonic() - began < 30
    assert sum(driver.outcomes().values()) == 5
    stopped = LoadDriver(f"{mlflow_server.uri}/health", {}, seconds=60)
    stopped.start()
    time.sleep(0.5)
    stopped.stop()
    assert not stopped.is_alive() and stopped.outcomes()


def test_holder_pid_reads_the_lease_holder_format():
    assert holder_pid("host-1:4242:abcd1234") == 4242
    assert holder_pid("no pid here") is None


def _plant(db, *, rows: int, pending: int) -> list[ObjectId]:
    now = dt.datetime.now(dt.UTC)
    ids = db["dummy_col_demo"].insert_many([{"datetime_": now, "source": "test"} for _ in range(rows)]).inserted_ids
    if pending:
        db["dummy_col_demo_pending"].insert_many([{"_id": i, "datetime_": now} for i in ids[:pending]])
    return ids


def test_checker_passes_a_consistent_database_and_catches_each_violation(infra_stack, db):
    checker = InvariantChecker(infra_stack, retention_keep=1, model_name=f"inv-{uuid.uuid4().hex[:8]}")
    ids = _plant(db, rows=4, pending=1)
    # Rows 1..3 were predicted (stored under the row id), row 0 is still pending: consistent.
    db["predictions"].insert_many([{"_id": i, "row_id": str(i), "prediction": 5.0} for i in ids[1:]])
    db["predictions"].insert_one({"prediction": 6.0})  # an anonymous prediction is nobody's row
    report = checker.check(wait_seconds=0)
    assert report.ok, report.summary()
    assert report.figures["rows"] == 4 and report.figures["pending"] == 1

    lost = _plant(db, rows=1, pending=0)[0]  # neither mark nor prediction
    db["predictions"].insert_one({"row_id": str(ids[1]), "prediction": 5.5})  # a second one for row 1
    db["job_runs"].insert_one({"_id": "r1", "job": "etl", "status": "running"})
    report = checker.check(wait_seconds=0)
    found = {v.invariant[0]: v for v in report.violations}
    assert set(found) == {"1", "2", "3"}, report.summary()
    assert found["2"].examples == [str(lost)]
    assert str(ids[1]) in found["1"].examples


def test_checker_catches_files_of_a_deleted_version_and_unaliased_old_versions(infra_stack, db):
    import mlflow
    from mlflow import MlflowClient
    from sklearn.dummy import DummyRegressor

    name = f"inv-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(infra_stack.mlflow_uri)
    mlflow.set_tracking_uri(infra_stack.mlflow_uri)
    mlflow.set_experiment("invariants")
    for _ in range(2):
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                DummyRegressor().fit([[0.0]], [1.0]), name="model", registered_model_name=name,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            )
    checker = InvariantChecker(infra_stack, retention_keep=1, model_name=name)
    report = checker.check(wait_seconds=0)
    assert [v.invariant[0] for v in report.violations] == ["4"], report.summary()  # v1: old and unaliased

    client.delete_model_version(name, "1")  # the version goes, its files stay: what retention must never do
    report = checker.check(wait_seconds=0)
    assert [v.invariant[0] for v in report.violations] == ["5"], report.summary()


def test_checker_waits_for_writes_still_landing(infra_stack, db):
    checker = InvariantChecker(infra_stack, retention_keep=1, model_name=f"inv-{uuid.uuid4().hex[:8]}")
    row = _plant(db, rows=1, pending=0)[0]
    late = threading.Timer(2.0, lambda: db["predictions"].insert_one({"_id": row, "row_id": str(row)}))
    late.start()
    report = checker.check(wait_seconds=20)
    late.join()
    assert report.ok, report.summary()
