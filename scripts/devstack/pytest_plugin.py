"""Pytest fixtures for real servers (enable with ``-p devstack.pytest_plugin``).

ferretdb, s3_server and mlflow_server are session-scoped: each starts on first use and is stopped at the end
of the session even when tests fail. Tests that stop one to simulate an outage must start it again
(``server.start()``, same port and data) before they finish. native_stack_factory is module-scoped.
"""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import FerretDB, MlflowServer, S3Server, process_registry_users
from devstack.stack import DEFAULT_MONGO_DB, NativeStack

MONGO_USER = "mlstack"


@pytest.fixture(scope="session")
def devstack_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every server's data and logs in this session."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def devstack_admin_token() -> str:
    """A random admin token (long enough for the services' settings validation)."""
    return secrets.token_urlsafe(32)


UNIT_ADMIN_TOKEN = "unit-test-admin-token-0123456789"
UNIT_SERVICE_TOKEN = "unit-test-service-token-0123456789"


@pytest.fixture(scope="session", autouse=True)
def registry_admin() -> Iterator[dict[str, str]]:
    """The test process talks to every harness MLflow as its admin: MLflow's client reads these variables.

    Every harness MLflow of the session shares one set of users (devstack.servers.process_registry_users), so
    ``MlflowClient(stack.mlflow_uri)`` works against any of them. Servers and apps the harness starts never
    inherit these (devstack.servers.base_env drops them); each service gets its own user.
    """
    credentials = process_registry_users().client_env("admin")
    saved = {key: os.environ.get(key) for key in credentials}
    os.environ.update(credentials)
    yield credentials
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _isolate_mlflow_globals() -> Iterator[None]:
    """Undo what a test's MLflow client set process-wide: the tracking/registry URIs, credentials and their exports.

    mlflow.set_tracking_uri / set_registry_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, and an app
    built in the test process exports its registry user (and closes MLflow's loaders); left behind, they would
    send a later test's registrations (and the servers it starts) to another test's registry, or as another
    user. Other MLFLOW_*
    settings stay: the apps set their HTTP timeout and retry defaults once, at import.
    """
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    saved = {key: os.environ[key] for key in keys if key in os.environ}
    yield
    for key in keys:
        os.environ.pop(key, None)
    os.environ.update(saved)
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture
def offline_settings(tmp_path: Path) -> dict[str, object]:
    """Unit-test settings shared by every service: MongoDB on a closed port with tiny timeouts, no scheduler."""
    return {
        "admin_token": UNIT_ADMIN_TOKEN,
        "service_token": UNIT_SERVICE_TOKEN,
        "mongo_uri": "mongodb://127.0.0.1:1/",
        "mongo_timeout_ms": 200,
        "state_dir": tmp_path / "state",
        "log_dir": tmp_path / "logs",
    }


@pytest.fixture
def client(app):
    """A Flask test client of the service's `app` fixture."""
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers carrying the unit tests' admin token."""
    return {"Authorization": f"Bearer {UNIT_ADMIN_TOKEN}"}


@pytest.fixture
def service() -> dict[str, str]:
    """Headers carrying the unit tests' service token (the ETL's role on serving's /predict)."""
    return {"Authorization": f"Bearer {UNIT_SERVICE_TOKEN}"}


def _assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error_code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


@pytest.fixture
def assert_json_error() -> Callable[..., dict]:
    """``assert_json_error(response, status, code)``: a Flask test response in the one error shape; its body."""
    return _assert_json_error


@pytest.fixture(scope="session")
def ferretdb(devstack_workdir: Path) -> Iterator[FerretDB]:
    """FerretDB with SCRAM auth; `.uri` carries the credentials, `.stop()`/`.start()` simulate an outage."""
    server = FerretDB(devstack_workdir / "ferretdb", username=MONGO_USER, password=secrets.token_urlsafe(18))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def fresh_db(ferretdb: FerretDB) -> Iterator[Any]:
    """A database of its own on the session's FerretDB (tz-aware client), dropped after the test."""
    client = ferretdb.client(tz_aware=True)
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


@pytest.fixture(scope="session")
def s3_server(devstack_workdir: Path) -> Iterator[S3Server]:
    """An S3 gateway; `.endpoint_url`, `.client()`, `.create_bucket()`, `.env()`."""
    server = S3Server(
        devstack_workdir / "s3",
        access_key="devstack" + secrets.token_hex(6),
        secret_key=secrets.token_urlsafe(24),
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(devstack_workdir: Path, s3_server: S3Server) -> Iterator[MlflowServer]:
    """An MLflow tracking server storing artifacts in the `mlflow` bucket of s3_server; `.uri`."""
    server = MlflowServer(devstack_workdir / "mlflow", s3=s3_server)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def native_stack_factory(
    devstack_workdir: Path, devstack_admin_token: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NativeStack]]:
    """Start whole stacks, ``factory(services=("serving", "etl"), extra_env={...})``; stopped per module.

    Each stack gets its own FerretDB, S3 and MLflow (so tests that stop one, or count documents, see only
    their own), unless ``shared_infra=True`` borrows the session's ferretdb/s3_server/mlflow_server.
    """
    stacks: list[NativeStack] = []

    def make(
        *,
        services: Iterable[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        workers: int = 2,
        mongo_db: str = DEFAULT_MONGO_DB,
        shared_infra: bool = False,
    ) -> NativeStack:
        infra = {}
        if shared_infra:
            infra = {
                "ferretdb": request.getfixturevalue("ferretdb"),
                "s3": request.getfixturevalue("s3_server"),
                "mlflow": request.getfixturevalue("mlflow_server"),
            }
        stack = NativeStack(
            devstack_workdir / f"stack-{uuid.uuid4().hex[:8]}",
            admin_token=devstack_admin_token,
            workers=workers,
            extra_env=extra_env,
            mongo_db=mongo_db,
            services=services,
            registry_users=process_registry_users(),
            **infra,
        )
        stacks.append(stack)
        return stack.start()

    try:
        yield make
    finally:
        for stack in reversed(stacks):
            stack.stop()
