"""The devstack harness against real servers: FerretDB auth and restarts (on SQLite and on PostgreSQL), S3, MLflow
artifacts, Nginx."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import requests
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from devstack.ports import can_connect
from devstack.procs import ManagedProcess, ProcessError, descendants
from devstack.servers import (
    NGINX_TEMPLATE,
    POSTGRESQL_MAJOR,
    REPO_ROOT,
    FerretDB,
    GunicornApp,
    MlflowServer,
    Nginx,
    PostgreSQL,
    S3Server,
    nginx_settings,
    postgresql_bin_dir,
    render_template,
    stop_all,
)
from devstack.stack import resolve_services

pytestmark = pytest.mark.integration

TESTS_DATA = Path(__file__).resolve().parents[2] / "scripts" / "devstack" / "tests_data"


def test_ferretdb_rejects_a_wrong_password(ferretdb: FerretDB) -> None:
    """SCRAM is really on: a wrong password fails, no credentials cannot read."""
    wrong = (
        f"mongodb://{ferretdb.username}:not-the-password@{ferretdb.host}:{ferretdb.port}/"
        f"?authSource={ferretdb.database}"
    )
    with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=2000) as client, pytest.raises(OperationFailure):
        client["DUMMY"]["probe"].find_one()
    anonymous = f"mongodb://{ferretdb.host}:{ferretdb.port}/"
    with (
        pymongo.MongoClient(anonymous, serverSelectionTimeoutMS=2000) as client,
        pytest.raises(OperationFailure),
    ):
        client["DUMMY"]["probe"].find_one()


def test_ferretdb_data_survives_a_restart(ferretdb: FerretDB) -> None:
    """Insert, stop (clients fail fast), start on the same port and data dir, read it back."""
    marker = uuid.uuid4().hex
    with ferretdb.client() as client:
        client["DUMMY"]["harness"].insert_one({"marker": marker})
        assert client["DUMMY"]["harness"].find_one({"marker": marker}) is not None

    port = ferretdb.port
    ferretdb.stop()
    ferretdb.stop()  # stopping twice is harmless
    try:
        with (
            ferretdb.client(serverSelectionTimeoutMS=1000) as client,
            pytest.raises(ServerSelectionTimeoutError),
        ):
            client.admin.command("ping")
    finally:
        ferretdb.start()

    assert ferretdb.port == port
    with ferretdb.client() as client:
        assert client["DUMMY"]["harness"].find_one({"marker": marker}) is not None


@pytest.fixture(scope="session")
def postgresql_bin() -> Path:
    """PostgreSQL's server binaries, installed by bench/tools.sh postgresql (Debian's package) when missing."""
    try:
        return postgresql_bin_dir()
    except FileNotFoundError:
        pass
    done = subprocess.run([str(REPO_ROOT / "bench" / "tools.sh"), "postgresql"], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        pytest.skip(f"PostgreSQL {POSTGRESQL_MAJOR} is not installed and bench/tools.sh postgresql could not install "
                    f"it (needs root or sudo, and apt): {done.stderr[-600:]}")
    return postgresql_bin_dir()


@pytest.fixture
def ferretdb_on_postgresql(postgresql_bin: Path, tmp_path: Path) -> Iterator[tuple[PostgreSQL, FerretDB]]:
    """A private PostgreSQL cluster and a FerretDB storing in it, both started, stopped after the test.

    The cluster lives in a directory of its own under /tmp (mode 0711): as root, PostgreSQL runs as Debian's
    ``postgres`` user, who cannot enter pytest's 0700 tmp_path. Its log is copied into tmp_path before the
    directory is removed.
    """
    open_dir = Path(tempfile.mkdtemp(prefix="mlstack-pg-test-"))
    open_dir.chmod(0o711)
    servers: list[PostgreSQL | FerretDB] = []
    try:
        postgresql = PostgreSQL(open_dir / "postgresql")
        servers.append(postgresql.start())
        ferretdb = FerretDB(tmp_path / "ferretdb", username="harness", password=secrets.token_urlsafe(18),
                            backend="postgresql", postgresql_url=postgresql.uri)
        servers.append(ferretdb.start())
        yield postgresql, ferretdb
    finally:
        stop_all(servers)
        if (open_dir / "postgresql" / "logs").is_dir():
            shutil.copytree(open_dir / "postgresql" / "logs", tmp_path / "postgresql-logs", dirs_exist_ok=True)
        shutil.rmtree(open_dir, ignore_errors=True)


def test_ferretdb_on_postgresql_stores_there_and_survives_restarts(
    ferretdb_on_postgresql: tuple[PostgreSQL, FerretDB],
) -> None:
    """Insert and find through pymongo; the data is in PostgreSQL (loopback only) and outlives restarts of both."""
    postgresql, ferretdb = ferretdb_on_postgresql
    marker = uuid.uuid4().hex
    with ferretdb.client() as client:
        client["harness_pg"]["rows"].insert_many([{"n": i, "marker": marker} for i in range(100)])
        assert client["harness_pg"]["rows"].count_documents({"marker": marker}) == 100
        assert client["harness_pg"]["rows"].find_one({"n": 42}, {"_id": 0}) == {"n": 42, "marker": marker}
    # FerretDB keeps a database as a PostgreSQL schema of the same name, and writes no SQLite files.
    assert postgresql.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'harness_pg'", database="ferretdb") == "1"
    assert not ferretdb.data_dir.exists()
    assert postgresql.psql("SHOW listen_addresses") == "127.0.0.1"
    assert postgresql.psql("SHOW unix_socket_directories") == ""

    old_tree = descendants(postgresql.pid or 0)
    assert len(old_tree) > 3  # the postmaster and the processes it forked (checkpointer, FerretDB's backends...)
    ferretdb.stop()
    postgresql.restart()
    assert not [pid for pid in old_tree if Path(f"/proc/{pid}").exists()], "stopped by its pid, every child gone"
    ferretdb.start()
    with ferretdb.client() as client:
        assert client["harness_pg"]["rows"].count_documents({"marker": marker}) == 100


def test_ferretdb_on_postgresql_keeps_scram_on(ferretdb_on_postgresql: tuple[PostgreSQL, FerretDB]) -> None:
    """As on SQLite, a wrong password fails: FerretDB checks the users itself, PostgreSQL trusts only FerretDB."""
    _, ferretdb = ferretdb_on_postgresql
    wrong = f"mongodb://{ferretdb.username}:not-the-password@{ferretdb.host}:{ferretdb.port}/?authSource=admin"
    with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=2000) as client, pytest.raises(OperationFailure):
        client["harness_pg"]["rows"].find_one()


@pytest.mark.parametrize(("backend", "url"), [("mysql", None), ("postgresql", None), ("sqlite", "postgres://x/y")])
def test_ferretdb_refuses_an_unknown_backend_or_a_misplaced_url(tmp_path: Path, backend: str, url: str | None) -> None:
    """A backend FerretDB v1 has but we do not run, or a PostgreSQL URL without its backend, fails at once."""
    with pytest.raises(ValueError, match=r"backend|postgresql_url"):
        FerretDB(tmp_path, username="u", password="p", backend=backend, postgresql_url=url)


def test_s3_put_get_and_idempotent_bucket(s3_server: S3Server) -> None:
    """Objects round-trip; creating an existing bucket is not an error."""
    s3_server.create_bucket("harness-bucket")
    s3_server.create_bucket("harness-bucket")
    client = s3_server.client()
    client.put_object(Bucket="harness-bucket", Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket="harness-bucket", Key="a/b.txt")["Body"].read() == b"hello"


def test_mlflow_logs_metrics_and_artifacts_to_s3(
    mlflow_server: MlflowServer, s3_server: S3Server, tmp_path: Path
) -> None:
    """A client without S3 credentials logs through the server; the artifact lands in the bucket."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment_id = client.create_experiment(f"harness-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "mae", 0.5)
    artifact = tmp_path / "note.txt"
    artifact.write_text("artifact body")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    assert client.get_run(run.info.run_id).data.metrics["mae"] == 0.5
    keys = [
        obj["Key"]
        for obj in s3_server.client().list_objects_v2(Bucket=mlflow_server.bucket).get("Contents", [])
    ]
    assert f"{experiment_id}/{run.info.run_id}/artifacts/note.txt" in keys


def test_mlflow_restarts_on_the_same_port(mlflow_server: MlflowServer) -> None:
    """Stopped, the server refuses connections; started again, it answers on the same URI with its data and users."""
    uri = mlflow_server.uri
    env = mlflow_server.client_env("admin")
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    before = requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=100", auth=admin, timeout=5).json()
    mlflow_server.stop()
    try:
        assert not can_connect(mlflow_server.port)
    finally:
        mlflow_server.start()
    assert mlflow_server.uri == uri
    after = requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=100", auth=admin, timeout=5).json()
    assert [e["name"] for e in after.get("experiments", [])] == [
        e["name"] for e in before.get("experiments", [])
    ]


@pytest.fixture(scope="module")
def hello_behind_nginx(devstack_workdir: Path) -> Iterator[tuple[GunicornApp, Nginx]]:
    """The tiny WSGI app under two Gunicorn workers, behind Nginx with the sample template."""
    app = GunicornApp(
        "hello",
        "hello_app:app",
        env={"PYTHONPATH": str(TESTS_DATA)},
        workdir=devstack_workdir / "hello",
        workers=2,
    )
    nginx = Nginx(
        "hello-nginx",
        TESTS_DATA / "sample.conf.template",
        upstream=f"{app.host}:{app.port}",
        workdir=devstack_workdir / "hello-nginx",
    )
    try:
        app.start()
        nginx.start()
        yield app, nginx
    finally:
        nginx.stop()
        app.stop()


def test_nginx_proxies_and_passes_the_request_id(hello_behind_nginx: tuple[GunicornApp, Nginx]) -> None:
    """Requests reach Gunicorn through Nginx; a caller's X-Request-ID is kept, a missing one is made."""
    app, nginx = hello_behind_nginx
    assert len(app.pids()) == 2
    echoed = requests.get(f"{nginx.url}/echo", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert echoed.status_code == 200
    assert echoed.json()["request_id"] == "abc-123"
    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert echoed.json()["state_dir"] == str(app.state_dir)
    generated = requests.get(f"{nginx.url}/echo", timeout=5).json()["request_id"]
    assert generated and len(generated) == 32


def test_nginx_template_rendering_leaves_nginx_variables_alone() -> None:
    """Only the two placeholders change; listen binds loopback and the IPv6 wildcard line is dropped."""
    rendered = render_template(
        (TESTS_DATA / "sample.conf.template").read_text(), port=8123, upstream="1.2.3.4:9"
    )
    assert "listen 127.0.0.1:8123;" in rendered
    assert "[::]" not in rendered
    assert "proxy_pass http://1.2.3.4:9;" in rendered
    assert "$request_id" in rendered and "$http_x_request_id" in rendered
    assert "${" not in rendered


def test_service_templates_render(tmp_path: Path) -> None:
    """The shared template with each app's nginx.env renders to a config `nginx -t` accepts, every value used."""
    folders = sorted(path.parent.parent.name for path in REPO_ROOT.glob("*/nginx/nginx.env"))
    assert folders == ["etl-flask-scheduler", "serving-flask", "training-flask-scheduler"]
    for folder in folders:
        nginx = Nginx.for_app(folder, folder, upstream="127.0.0.1:9", workdir=tmp_path / folder)
        rendered = nginx.render()
        for value in nginx_settings(folder).values():
            assert value in rendered, (folder, value)
        result = nginx.check_config()
        assert result.returncode == 0, f"{folder}:\n{result.stderr}"


def test_a_template_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="NGINX_MAX_BODY"):
        render_template(NGINX_TEMPLATE.read_text(), port=8123, upstream="1.2.3.4:9",
                        settings={"NGINX_APP": "x", "NGINX_TIMEOUT": "30s"})


def test_managed_process_reports_an_early_death(tmp_path: Path) -> None:
    """A process that dies before it is ready fails wait_ready at once, with its log's tail."""
    proc = ManagedProcess(
        "dies", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], log_dir=tmp_path
    )
    with proc, pytest.raises(ProcessError, match="boom"):
        proc.wait_ready(lambda: False, timeout=10)
    assert proc.stop() is None


def test_managed_process_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    """stop() escalates to SIGKILL after the grace period and reaps the whole process group."""
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess("stubborn", [sys.executable, "-c", code], log_dir=tmp_path, stop_grace=1)
    proc.start()
    proc.wait_ready(lambda: "up" in proc.log_tail(), timeout=10)
    began = time.monotonic()
    assert proc.stop() == -9
    assert time.monotonic() - began < 10
    assert not proc.running


def test_services_resolve_by_name_in_start_order() -> None:
    """Names map to specs in dependency order (serving first); unknown names are an error."""
    assert [spec.name for spec in resolve_services(["etl", "serving"])] == ["serving", "etl"]
    assert [spec.name for spec in resolve_services(None)] == ["serving", "etl", "training"]
    with pytest.raises(ValueError, match="unknown service"):
        resolve_services(["nope"])
