"""The job machinery against a real FerretDB: fires run once, manual runs execute once, a dead leader's runs
are failed by the next leader, and the job routes answer from MongoDB only (no host-local files)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from devstack.polling import wait_until
from mlstack_core.appkit import create_base_app
from mlstack_core.job_routes import install_job
from mlstack_core.jobs import IntervalSpec, JobDefinition, JobService, RunContext
from mlstack_core.jobs.runner import JobRunner, public_error
from mlstack_core.jobs.runs import ABANDONED_ERROR, RUNS_COLLECTION, RunRepository
from mlstack_core.jobs.schedule import JOBS_COLLECTION
from mlstack_core.mongo import MongoProvider
from mlstack_core.settings import BaseServiceSettings, load_settings

pytestmark = pytest.mark.integration

ADMIN = "coordination-test-admin-token-0123"


@pytest.fixture
def db_name(ferretdb):
    name = f"jobs_{uuid.uuid4().hex[:10]}"
    yield name
    client = ferretdb.client()
    client.drop_database(name)
    client.close()


@pytest.fixture
def mongo(ferretdb, db_name):
    provider = MongoProvider(ferretdb.uri, db_name, timeout_ms=2000)
    yield provider
    provider.close()


def make_jobs(mongo, func, *, on_abandoned=None, seconds: int = 3600) -> JobService:
    job = JobDefinition("demo", func, IntervalSpec(seconds=seconds), on_abandoned=on_abandoned)
    return JobService(service="demo-service", job=job, mongo=mongo)


def tick_until_leader(runner: JobRunner, timeout: float = 30.0) -> int:
    def leads() -> int | None:
        runner.tick()
        return runner.epoch

    return wait_until(leads, timeout, f"{runner.holder} to lead", interval=0.2)


def test_a_fire_is_recorded_once_however_many_leaders_insert_it(mongo):
    runs = RunRepository(mongo.db(), service="demo-service", job="demo")
    fire = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    barrier = threading.Barrier(6)
    won: list[bool] = [False] * 6

    def insert(i: int) -> None:
        barrier.wait()
        won[i] = runs.fire(fire, holder=f"h{i}", epoch=i) is not None

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(won) == 1
    assert mongo.db()[RUNS_COLLECTION].count_documents({"fire_time": fire}) == 1


def test_a_manual_run_is_claimed_once(mongo):
    runs = RunRepository(mongo.db(), service="demo-service", job="demo")
    for _ in range(3):
        queued = runs.request("req-1")
        barrier = threading.Barrier(6)
        claimed: list[Any] = [None] * 6

        def claim(i: int, barrier=barrier, claimed=claimed) -> None:
            barrier.wait()
            claimed[i] = runs.claim_queued(holder=f"h{i}", epoch=1)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [c for c in claimed if c is not None]
        assert [w["_id"] for w in winners] == [queued["_id"]]
        assert runs.get(queued["_id"])["status"] == "running"


def test_only_the_lease_holder_runs_and_each_fire_runs_once(mongo):
    calls: list[RunContext] = []
    jobs = make_jobs(mongo, lambda ctx: calls.append(ctx) or {"ok": True}, seconds=5)
    # A fire due now: the schedule's anchor one interval and a bit ago.
    jobs.schedule().ensure()
    mongo.db()[JOBS_COLLECTION].update_one(
        {"_id": "demo"}, {"$set": {"anchor": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5.5)}}
    )
    first, second = JobRunner(jobs, holder="host-a"), JobRunner(jobs, holder="host-b")
    epoch = tick_until_leader(first)
    second.tick()
    assert second.epoch is None  # the lease is held: the second replica does nothing
    wait_until(lambda: first._current is None and calls, 20, "the fire to run")
    for runner in (first, second, first):
        runner.tick()
    assert len(calls) == 1 and calls[0].trigger == "schedule" and calls[0].epoch == epoch
    records = list(mongo.db()[RUNS_COLLECTION].find({"job": "demo"}))
    assert len(records) == 1 and records[0]["status"] == "succeeded" and records[0]["holder"] == "host-a"
    first.stop(0)


def test_a_dead_leaders_run_is_failed_by_the_next_leader_within_the_bound(mongo):
    release = threading.Event()
    abandoned: list[dict] = []

    def blocking(ctx: RunContext) -> dict:
        release.wait(30)
        return {"finished": True}

    jobs = make_jobs(mongo, blocking, on_abandoned=abandoned.append)
    dead = JobRunner(jobs, holder="dead-host", lease_ttl=2.0)
    tick_until_leader(dead)
    run = jobs.request_run("req-dead")
    wait_until(lambda: dead.tick() or dead._current is not None, 20, "the manual run to start")
    assert jobs.get_run(run["_id"])["status"] == "running"
    # The leader "dies": it stops ticking (renewing). Its run is still "running" in the database.
    survivor = JobRunner(jobs, holder="survivor", lease_ttl=2.0)
    started = time.monotonic()
    survivor_epoch = tick_until_leader(survivor, timeout=30)
    took_over = time.monotonic() - started
    assert survivor_epoch > dead.epoch
    record = jobs.get_run(run["_id"])
    assert record["status"] == "failed" and record["error"] == ABANDONED_ERROR
    wait_until(lambda: abandoned, 10, "the on_abandoned hook")
    assert [r["_id"] for r in abandoned] == [run["_id"]]
    # The old leader finishing late cannot overwrite the outcome (fenced by epoch and status).
    release.set()
    wait_until(lambda: dead._current is None, 20, "the old leader's run to return")
    assert jobs.get_run(run["_id"])["status"] == "failed"
    assert took_over < 30  # generous: the bound is the TTL (2 s here) plus one tick
    survivor.stop(0)


def test_a_stopping_leader_fails_its_run_and_releases_the_lease(mongo):
    release = threading.Event()
    jobs = make_jobs(mongo, lambda ctx: release.wait(30) and {})
    leader = JobRunner(jobs, holder="stopping", lease_ttl=60)
    tick_until_leader(leader)
    run = jobs.request_run(None)
    wait_until(lambda: leader.tick() or leader._current is not None, 20, "the run to start")
    leader.stop(timeout=0.2)
    assert jobs.get_run(run["_id"])["status"] == "failed"
    # Released, not left to expire in 60 s: the next replica leads at its first tick.
    successor = JobRunner(jobs, holder="next")
    successor.tick()
    assert successor.epoch is not None
    release.set()


def test_public_errors_name_no_host_or_exception_text():
    down = ServerSelectionTimeoutError("db-7.internal:27017: [Errno 111] Connection refused, Timeout: 2.0s")
    assert public_error(down) == "MongoDB unavailable"
    message = public_error(RuntimeError("cannot reach http://10.0.0.7:5000"))
    assert "10.0.0.7" not in message and "RuntimeError" in message

    class StepFailed(Exception):
        public_message = "MLflow unavailable during 'promote'"

    assert public_error(StepFailed("http://mlflow:5000 refused")) == "MLflow unavailable during 'promote'"


@pytest.fixture
def client(ferretdb, db_name, tmp_path):
    settings = load_settings(BaseServiceSettings, {
        "service_name": "demo-service", "admin_token": ADMIN, "mongo_uri": ferretdb.uri, "mongo_db": db_name,
        "state_dir": tmp_path / "s", "log_dir": tmp_path / "logs",
    })
    app = create_base_app(__name__, settings)
    install_job(app, JobDefinition("demo", lambda ctx: {}, IntervalSpec(minutes=5)), run_scheduler=False)
    yield app.test_client()
    app.extensions["mongo"].close()


def test_routes_queue_in_mongodb_and_validate_run_ids(client, tmp_path):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    response = client.post("/jobs/demo/run?wait=0.5", headers=admin)
    assert response.status_code == 202  # no scheduler process here: nothing runs it
    body = response.get_json()
    assert body["status"] == "queued" and len(body["run_id"]) == 32 and "holder" not in body
    status = client.get(body["status_url"])
    assert status.status_code == 202 and status.get_json()["run_id"] == body["run_id"]
    assert not any((tmp_path / "s").rglob("*.json"))  # nothing host-local
    for bad in ("x" * 300, body["run_id"].upper(), body["run_id"][:-1], "..", "%2e%2e"):
        response = client.get(f"/jobs/runs/{bad}")
        assert response.status_code == 404 and response.get_json()["error_code"] == "RUN_NOT_FOUND"
        assert bad not in response.get_data(as_text=True)
    assert client.get(f"/jobs/runs/{uuid.uuid4().hex}").status_code == 404
    for wait in ("21", "120", "nan", "inf", "-1", "soon"):
        response = client.post(f"/jobs/demo/run?wait={wait}", headers=admin)
        assert response.status_code == 400 and response.get_json()["error_code"] == "INVALID_PARAMETER"


def test_the_leader_reports_the_next_run_without_touching_the_schedule(mongo):
    jobs = make_jobs(mongo, lambda ctx: {}, seconds=60)
    leader = JobRunner(jobs, holder="reporter")
    tick_until_leader(leader)
    job = jobs.get_job()
    assert job["paused"] is False and job["next_run_time"] is not None
    jobs.set_paused(True)
    leader.tick()
    job = jobs.get_job()
    assert job["paused"] is True and job["next_run_time"] is None
    assert mongo.db()[JOBS_COLLECTION].find_one({"_id": "demo"})["paused"] is True
    leader.stop(0)
