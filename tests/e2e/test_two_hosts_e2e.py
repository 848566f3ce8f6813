"""Two complete app sets ("hosts": their own processes, ports and STATE_DIRs) sharing one MongoDB and MLflow.

With a 5 s ETL schedule, each fire runs once across both hosts (one run record per fire time, each run's rows
inserted once) and runs never overlap; trainings requested on both hosts run one at a time. Then the host
leading the ETL is killed (SIGKILL, every process of it, by pid) while its run is going, and the host leading
training is killed while it trains: each time the survivor takes over, the dead leader's run ends "failed",
nothing is left "running", the training lease is freed and the abandoned MLflow run is marked FAILED.

The ETL forwards to a server that accepts and never answers (every ETL run spends its predict timeout there),
so a kill lands while a run is going; rows stay pending, which is not what this test is about.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from devstack.faults import holder_pid, paused, service_pids
from devstack.polling import wait_until
from devstack.stack import NativeStack
from mlstack_core.jobs.runs import ABANDONED_ERROR
from mlstack_core.locks import MongoLease

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

SERVICES = ("etl", "training")
ETL_INTERVAL = 5
BATCH = 3
PREDICT_TIMEOUT = 3
# The stated bound (README "Scheduler once per service"): lease TTL 15 s + one 1 s tick. Deadlines add slack
# for a loaded 2-core machine; the measured takeover is logged, not asserted.
BOUND_SECONDS = 16
DEADLINE = BOUND_SECONDS + 60
TIMEOUT = 15


class BlackHole:
    """A TCP server that accepts connections and never answers (a serving that hangs)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self._sock.accept()
                self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in [*self._held, self._sock]:
            conn.close()


@pytest.fixture(scope="module")
def hosts(native_stack_factory, devstack_workdir, devstack_admin_token) -> Iterator[dict[str, NativeStack]]:
    hole = BlackHole()
    env = {
        "ETL_INTERVAL_SECONDS": str(ETL_INTERVAL),
        "ETL_BATCH_SIZE": str(BATCH),
        "ETL_BACKFILL_LIMIT": "10",
        "PREDICTAPI": f"http://127.0.0.1:{hole.port}/predict",
        "PREDICT_TIMEOUT_SECONDS": str(PREDICT_TIMEOUT),
        "PREDICT_RETRIES": "0",
        "TRAINING_INTERVAL_SECONDS": "3600",
        "TRAINING_BOOTSTRAP": "false",  # only the trainings this test asks for
        "LOADMODELAPI": "http://127.0.0.1:1/loadModel/",
        "SERVING_NUDGE_RETRIES": "0",
        "FALLBACK_ROWS": "2000",
    }
    first = native_stack_factory(services=SERVICES, extra_env=env, workers=1)
    second = NativeStack(
        devstack_workdir / f"host-b-{uuid.uuid4().hex[:8]}", admin_token=devstack_admin_token, workers=1,
        extra_env=env, mongo_db=first.mongo_db, services=SERVICES,
        ferretdb=first.ferretdb, s3=first.s3, mlflow=first.mlflow,
    )
    try:
        second.start()
        yield {"a": first, "b": second}
    finally:
        second.stop()
        hole.close()


@pytest.fixture(scope="module")
def db(hosts):
    client = hosts["a"].ferretdb.client()
    yield client[hosts["a"].mongo_db]
    client.close()


def admin(stack: NativeStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_token}"}


def lease_holder(db, service: str) -> dict | None:
    """The unexpired tenure of a service's scheduler lease, or None."""
    doc = db["locks"].find_one({"lease": f"scheduler:{service}:{service}"}, sort=[("epoch", -1)])
    if doc is None or doc["expires_at"].replace(tzinfo=dt.UTC) <= dt.datetime.now(dt.UTC):
        return None
    return doc


def leading_host(hosts, db, service: str) -> str:
    """Which host's process holds the service's scheduler lease (waits for one to)."""

    def find() -> str | None:
        doc = lease_holder(db, service)
        pid = holder_pid(doc["holder"]) if doc else None
        return next((name for name, stack in hosts.items() if pid in service_pids(stack, service)), None)

    return wait_until(find, DEADLINE, f"a leader of {service}", interval=0.5)


def kill_host(stack: NativeStack) -> list[int]:
    """SIGKILL every process of the host (Gunicorn masters, workers, scheduler processes, Nginx), by pid."""
    pids = sorted(set().union(*(service_pids(stack, service) for service in SERVICES)))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log.info("host killed: pids %s", pids)
    return pids


def restart_host(stack: NativeStack) -> None:
    for service in SERVICES:
        stack.nginx[service].stop()
        stack.apps[service].stop()  # reaps the killed processes
        stack.start_app(service)


def runs(db, job: str, **query) -> list[dict]:
    return list(db["job_runs"].find({"job": job, **query}).sort("started_at", 1))


def assert_no_overlap(records: list[dict]) -> None:
    finished = [r for r in records if r.get("started_at") and r.get("finished_at")]
    for earlier, later in itertools.pairwise(finished):
        assert earlier["finished_at"] <= later["started_at"], (earlier["_id"], later["_id"])


def wait_quiet(db, job: str) -> None:
    wait_until(lambda: not runs(db, job, status={"$in": ["queued", "running"]}), DEADLINE, f"no {job} run going")


def set_etl_paused(stack: NativeStack, paused_: bool) -> None:
    action = "pause" if paused_ else "resume"
    response = requests.post(f"{stack.urls['etl']}/jobs/etl/{action}", headers=admin(stack), timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def assert_rows_match_runs(db) -> None:
    """Every ETL run inserted its batch once (none for a run killed before its insert); no other rows."""
    per_batch = Counter(doc["batch_id"] for doc in db["dummy_col_demo"].find({}, {"batch_id": 1}))
    records = {r["_id"]: r for r in runs(db, "etl")}
    assert set(per_batch) <= set(records), set(per_batch) - set(records)
    for run_id, record in records.items():
        allowed = {BATCH} if record["status"] == "succeeded" else {0, BATCH}
        assert per_batch.get(run_id, 0) in allowed, (record, per_batch.get(run_id))


@pytest.mark.timeout(600)
def test_each_fire_runs_once_and_trainings_never_overlap(hosts, db):
    etl_leader = leading_host(hosts, db, "etl")
    # One training requested through each host's API: both queue in MongoDB, the leader runs them in turn.
    requested = []
    for stack in hosts.values():
        response = requests.post(f"{stack.urls['training']}/jobs/training/run", headers=admin(stack),
                                 timeout=TIMEOUT)
        assert response.status_code == 202, response.text
        requested.append(response.json()["run_id"])
    wait_until(lambda: len(runs(db, "etl", trigger="schedule")) >= 4, 120, "four scheduled ETL runs")
    set_etl_paused(hosts["a"], True)
    wait_quiet(db, "etl")
    wait_quiet(db, "training")

    scheduled = runs(db, "etl", trigger="schedule")
    fires = Counter(r["fire_time"] for r in scheduled)
    assert max(fires.values()) == 1, fires
    assert all(r["status"] == "succeeded" for r in scheduled), [(r["_id"], r["status"]) for r in scheduled]
    leader_pids = service_pids(hosts[etl_leader], "etl")
    assert {holder_pid(r["holder"]) in leader_pids for r in scheduled} == {True}  # only the leader ran them
    assert_no_overlap(scheduled)
    assert_rows_match_runs(db)
    assert db["dummy_col_demo"].count_documents({}) == BATCH * len(scheduled)

    trainings = runs(db, "training")
    assert sorted(r["_id"] for r in trainings) == sorted(requested)
    assert [r["status"] for r in trainings] == ["succeeded", "succeeded"], [r.get("error") for r in trainings]
    assert_no_overlap(trainings)
    set_etl_paused(hosts["a"], False)


@pytest.mark.timeout(600)
def test_killing_the_etl_leader_during_a_run_hands_over_within_the_bound(hosts, db):
    leader = leading_host(hosts, db, "etl")
    survivor = "b" if leader == "a" else "a"
    old_epoch = lease_holder(db, "etl")["epoch"]
    going = wait_until(lambda: runs(db, "etl", status="running"), DEADLINE, "an ETL run going")[0]
    killed_at = time.monotonic()
    kill_host(hosts[leader])

    def taken_over() -> dict | None:
        doc = lease_holder(db, "etl")
        return doc if doc and doc["epoch"] > old_epoch else None

    doc = wait_until(taken_over, DEADLINE, "the survivor to take the ETL lease", interval=0.2)
    log.info("ETL leadership moved in %.1f s (bound %s s)", time.monotonic() - killed_at, BOUND_SECONDS)
    assert holder_pid(doc["holder"]) in service_pids(hosts[survivor], "etl")
    record = wait_until(lambda: db["job_runs"].find_one({"_id": going["_id"], "status": "failed"}), DEADLINE,
                        "the dead leader's run to be failed")
    assert record["error"] == ABANDONED_ERROR and record["abandoned_by"] == doc["epoch"]
    # The survivor keeps the schedule going.
    wait_until(lambda: runs(db, "etl", status="succeeded", epoch=doc["epoch"]), DEADLINE,
               "a scheduled ETL run by the survivor")
    set_etl_paused(hosts[survivor], True)
    wait_quiet(db, "etl")
    scheduled = runs(db, "etl", trigger="schedule")
    assert max(Counter(r["fire_time"] for r in scheduled).values()) == 1
    assert_no_overlap([r for r in scheduled if r["_id"] != going["_id"]])
    assert_rows_match_runs(db)
    restart_host(hosts[leader])


@pytest.mark.timeout(600)
def test_killing_the_training_leader_during_training_fails_its_run_and_frees_everything(hosts, db):
    from mlflow import MlflowClient

    stacks = hosts
    leader = leading_host(stacks, db, "training")
    survivor = "b" if leader == "a" else "a"
    old_epoch = lease_holder(db, "training")["epoch"]
    mlflow_server = stacks["a"].mlflow
    client = MlflowClient(mlflow_server.uri)
    response = requests.post(f"{stacks[survivor].urls['training']}/jobs/training/run",
                             headers=admin(stacks[survivor]), timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    def mlflow_run() -> object | None:
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, filter_string=f"tags.job_run_id = '{run_id}'")
        return found[0] if found and found[0].info.status == "RUNNING" else None

    started = wait_until(mlflow_run, 120, "the training run's MLflow run", interval=0.2)
    # MLflow frozen for a moment: the training cannot finish before its host is killed.
    with paused(mlflow_server, 2):
        kill_host(stacks[leader])

    def taken_over() -> dict | None:
        doc = lease_holder(db, "training")
        return doc if doc and doc["epoch"] > old_epoch else None

    doc = wait_until(taken_over, DEADLINE, "the survivor to take the training lease", interval=0.2)
    assert holder_pid(doc["holder"]) in service_pids(stacks[survivor], "training")
    record = wait_until(lambda: db["job_runs"].find_one({"_id": run_id, "status": "failed"}), DEADLINE,
                        "the dead leader's training run to be failed")
    assert record["error"] == ABANDONED_ERROR
    # The training lease the dead run held expires (TRAINING_LEASE_TTL_SECONDS, 30 s), not after 600 s.
    training_lease = MongoLease(db, "training", ttl_seconds=30)

    def lease_free() -> bool:
        head = training_lease.current()
        return head is None or head["expires_at"].replace(tzinfo=dt.UTC) < dt.datetime.now(dt.UTC)

    wait_until(lease_free, 30 + DEADLINE, "the training lease to be free")
    wait_until(lambda: client.get_run(started.info.run_id).info.status == "FAILED", DEADLINE,
               "the abandoned MLflow run to be marked FAILED")
    # The survivor trains again, holding the freed lease.
    response = requests.post(f"{stacks[survivor].urls['training']}/jobs/training/run",
                             headers=admin(stacks[survivor]), timeout=TIMEOUT)
    follow_up = response.json()["run_id"]
    wait_until(lambda: db["job_runs"].find_one({"_id": follow_up, "status": {"$in": ["succeeded", "failed"]}}),
               120, "the survivor's training run")
    assert db["job_runs"].find_one({"_id": follow_up})["status"] == "succeeded"
    wait_quiet(db, "training")
    assert not list(db["job_runs"].find({"status": {"$in": ["running", "queued"]}, "job": "training"}))
    assert_no_overlap([r for r in runs(db, "training") if r["_id"] != run_id])
    restart_host(stacks[leader])
