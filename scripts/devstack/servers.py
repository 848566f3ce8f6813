"""Real servers for tests and the native dev stack: FerretDB (on SQLite or on a PostgreSQL of its own), an S3
gateway, MLflow, Gunicorn apps, Nginx.

Each class owns a work dir, picks free loopback ports once (a restart reuses them, so clients keep their
URLs), and offers start()/stop() that are safe to repeat, plus use as a context manager.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote_plus

from devstack.ports import LOOPBACK, can_connect, free_port, wait_port_free
from devstack.procs import ManagedProcess

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
# Last resort for local experiments only; scripts/install.sh builds into .tools/bin.
_LOCAL_FALLBACK_BIN = Path("/tmp/setup/bin")
NGINX_BIN = "/usr/sbin/nginx"

# Probes must fail fast: the readiness loop, not a client timeout, bounds the wait.
_PROBE_TIMEOUT = 1.0


def find_tool(name: str, env_var: str) -> str:
    """Locate a binary: $env_var, then .tools/bin, then PATH (then the local experiment fallback)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    fallback = _LOCAL_FALLBACK_BIN / name
    if fallback.is_file() and os.access(fallback, os.X_OK):
        return str(fallback)
    raise FileNotFoundError(f"{name} not found (set {env_var} or run scripts/install.sh to build it)")


# Settings a caller's process may carry (mlflow.set_tracking_uri/set_registry_uri export them) that would point a
# server of ours at someone else's registry or database.
_LEAKY_VARIABLES = (
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MONGO_URI",
    "ADMIN_TOKEN", "SERVICE_TOKEN",
)


def base_env() -> dict[str, str]:
    """The environment a server starts from: ours, minus settings that belong to the caller's own clients."""
    return {key: value for key, value in os.environ.items() if key not in _LEAKY_VARIABLES}


def _http_get(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = _PROBE_TIMEOUT) -> Any:
    import requests  # imported late: the harness module must import quickly

    return requests.get(url, headers=dict(headers or {}), timeout=timeout)


def _status_is(url: str, status: int = 200) -> bool:
    return _http_get(url).status_code == status


class _Server:
    """Common start/stop/restart plumbing around one ManagedProcess."""

    name: str = "server"
    ready_timeout: float = 60.0
    stop_grace: float = 10.0

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "logs"
        # Loopback only; the port is picked once, so a restart keeps it and clients keep their URLs.
        self.host = LOOPBACK
        self.port = port or free_port()
        self._proc: ManagedProcess | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT of the server."""
        return f"http://{self.host}:{self.port}"

    # Subclasses fill these in.
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return base_env()

    def _ready(self) -> bool:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Hook for preparing files before the process starts."""

    def _after_ready(self) -> None:
        """Hook run once the server answers, before start() returns; an error stops the server."""

    def _ports(self) -> list[int]:
        """The ports to wait for (free) before a start."""
        return [self.port]

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        """The server's main process id, while running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """The file the server's stdout and stderr go to."""
        return self.log_dir / f"{self.name}.log"

    def start(self, timeout: float | None = None) -> Self:
        """Start the server and wait until it answers; on failure stop it and raise with its log tail."""
        if self.running:
            return self
        began = time.monotonic()
        # A just-stopped server's port may still be held by a dying child; wait (bounded) before rebinding.
        for port in self._ports():
            wait_port_free(port, timeout=10)
        self._before_start()
        self._proc = ManagedProcess(
            self.name,
            self._argv(),
            log_dir=self.log_dir,
            env=self._env(),
            cwd=self.workdir,
            stop_grace=self.stop_grace,
        )
        self._proc.start()
        try:
            self._proc.wait_ready(self._ready, timeout=timeout or self.ready_timeout)
            self._after_ready()
        except BaseException:
            self._proc.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info("%s ready in %.1fs (log %s)", self.name, self.start_seconds, self.log_path)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the grace period); safe to call twice."""
        if self._proc is not None:
            code = self._proc.stop()
            log.info("%s stopped (exit code %s)", self.name, code)
            self._proc = None

    def restart(self, timeout: float | None = None) -> Self:
        """Stop then start again on the same ports and data."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_all(servers: list[Any]) -> None:
    """Stop the servers newest first, emptying the list; a failure is logged, never raised."""
    while servers:
        server = servers.pop()
        try:
            server.stop()
        except Exception:
            log.exception("stopping %s failed", server.name)


POSTGRESQL_MAJOR = 15
# Debian's layout (package postgresql-15); bench/tools.sh postgresql installs it.
POSTGRESQL_BIN_DIR = Path(f"/usr/lib/postgresql/{POSTGRESQL_MAJOR}/bin")


def postgresql_bin_dir() -> Path:
    """The directory of PostgreSQL's server binaries: $POSTGRESQL_BIN_DIR, else Debian's for the pinned major."""
    bin_dir = Path(os.environ.get("POSTGRESQL_BIN_DIR") or POSTGRESQL_BIN_DIR)
    missing = [name for name in ("initdb", "postgres", "pg_isready", "psql") if not (bin_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"PostgreSQL {POSTGRESQL_MAJOR} not found in {bin_dir} (missing {', '.join(missing)}; "
            "set POSTGRESQL_BIN_DIR or run bench/tools.sh postgresql to install Debian's package)"
        )
    return bin_dir


class PostgreSQL(_Server):
    """A private PostgreSQL cluster (Debian's binaries): data dir in the work dir, TCP on loopback only, no unix
    socket, trust authentication (loopback only), database ``ferretdb`` for a FerretDB backend.

    PostgreSQL refuses to run as root. Under root, initdb and postgres run as the ``postgres`` user Debian's package
    creates, through ``setpriv``, which execs (the recorded pid is the postmaster's own) and keeps the parent-death
    signal; that user owns the data dir, so the work dir must be reachable by it (root's 0700 temp dirs are not:
    give it a directory of its own under /tmp, mode 0711).
    """

    name = "postgresql"
    ready_timeout = 60.0
    superuser = "postgres"
    database = "ferretdb"  # made by _after_ready
    run_as = "postgres"  # only when running as root

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self.data_dir = self.workdir / "data"
        self.bin_dir = postgresql_bin_dir()

    @property
    def uri(self) -> str:
        """postgres:// URL of the ``ferretdb`` database (FerretDB's --postgresql-url)."""
        return f"postgres://{self.superuser}@{self.host}:{self.port}/{self.database}"

    @property
    def url(self) -> str:
        """The same postgres:// URL (there is no HTTP endpoint)."""
        return self.uri

    def _owner_prefix(self) -> list[str]:
        """The argv prefix that runs a command as the cluster's owner: nothing unless we are root."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            raise RuntimeError(
                f"running as root, PostgreSQL needs an unprivileged user {self.run_as!r} (Debian's postgresql "
                "package creates it)"
            ) from None
        return ["setpriv", f"--reuid={self.run_as}", f"--regid={self.run_as}", "--init-groups", "--pdeathsig=keep"]

    def _run_as_owner(self, argv: list[str], what: str, timeout: float = 120) -> None:
        done = subprocess.run([*self._owner_prefix(), *argv], env=self._env(), cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")

    def _before_start(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.run_as)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
            try:
                self._run_as_owner(["test", "-w", str(self.data_dir)], "the reachability check")
            except RuntimeError:
                raise RuntimeError(
                    f"{self.data_dir} is not writable by user {self.run_as!r}, who runs PostgreSQL here (we are root): "
                    "every parent directory must be searchable by it"
                ) from None
        # --no-sync: a cluster of tests and benchmarks, made anew when lost; the fsyncs would add seconds.
        self._run_as_owner(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), f"--username={self.superuser}", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            "initdb",
        )

    def _argv(self) -> list[str]:
        return [
            *self._owner_prefix(),
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", "unix_socket_directories=",  # TCP on loopback only
        ]

    def _client_argv(self, tool: str, *args: str, database: str = "postgres") -> list[str]:
        return [str(self.bin_dir / tool), "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", database,
                *args]

    def _ready(self) -> bool:
        done = subprocess.run(self._client_argv("pg_isready", "-t", "1"), capture_output=True, timeout=5, check=False)
        return done.returncode == 0

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = 600) -> str:
        """Run SQL with psql as the superuser; returns its unaligned output, raises with psql's error."""
        done = subprocess.run(self._client_argv("psql", "-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql,
                                                database=database),
                              env=self._env(), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout.strip()

    def _after_ready(self) -> None:
        if not self.psql("SELECT 1 FROM pg_database WHERE datname = 'ferretdb'"):
            self.psql("CREATE DATABASE ferretdb")

    def stop(self) -> None:
        """Fast shutdown: SIGINT to the postmaster (clients cut off, a shutdown checkpoint), then the usual stop.

        SIGTERM, which the usual stop sends the process group, is PostgreSQL's smart shutdown: it waits for every
        client (FerretDB's pool) to go, and it would reach the backends and auxiliary processes directly too.
        """
        proc = self._proc
        if proc is not None and proc.running and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            deadline = time.monotonic() + self.stop_grace
            while proc.running and time.monotonic() < deadline:
                time.sleep(0.05)
        super().stop()


class FerretDB(_Server):
    """FerretDB v1 (MongoDB wire protocol) on SQLite files or on a PostgreSQL database, with SCRAM authentication on.

    ``backend="sqlite"`` (the default) keeps its data in the work dir; ``backend="postgresql"`` stores it in the
    database at ``postgresql_url`` (a :class:`PostgreSQL`'s ``uri``), which must be up before FerretDB starts.
    """

    name = "ferretdb"
    ready_timeout = 30.0
    BACKENDS: ClassVar[tuple[str, ...]] = ("sqlite", "postgresql")

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        username: str,
        password: str,
        database: str = "admin",
        port: int | None = None,
        debug_port: int | None = None,
        backend: str = "sqlite",
        postgresql_url: str | None = None,
    ) -> None:
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown FerretDB backend {backend!r}; known: {', '.join(self.BACKENDS)}")
        if (backend == "postgresql") != bool(postgresql_url):
            raise ValueError("postgresql_url is required with backend='postgresql' and only then")
        super().__init__(workdir, port=port)
        self.backend = backend
        self.postgresql_url = postgresql_url
        self.username = username
        self.password = password
        # FerretDB creates the setup user in this database, so clients must authenticate against it.
        self.database = database
        self.debug_port = debug_port or free_port()
        self.data_dir = self.workdir / "data"
        self.state_dir = self.workdir / "state"
        self.binary = find_tool("ferretdb", "FERRETDB_BIN")

    @property
    def uri(self) -> str:
        """mongodb:// URI with credentials and the authSource the setup user lives in."""
        return (
            f"mongodb://{quote_plus(self.username)}:{quote_plus(self.password)}@{self.host}:{self.port}/"
            f"?authSource={quote_plus(self.database)}"
        )

    @property
    def display_uri(self) -> str:
        """The URI with the password masked, for printing."""
        return self.uri.replace(f":{quote_plus(self.password)}@", ":***@", 1)

    @property
    def debug_url(self) -> str:
        """FerretDB's debug HTTP server (probes /debug/livez, /debug/readyz and /debug/metrics)."""
        return f"http://{self.host}:{self.debug_port}/debug"

    def _ports(self) -> list[int]:
        return [self.port, self.debug_port]

    def _before_start(self) -> None:
        if self.backend == "sqlite":
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _backend_args(self) -> list[str]:
        if self.backend == "postgresql":
            return ["--handler=postgresql", f"--postgresql-url={self.postgresql_url}"]
        return ["--handler=sqlite", f"--sqlite-url=file:{self.data_dir}/"]

    def _argv(self) -> list[str]:
        return [
            self.binary,
            *self._backend_args(),
            f"--listen-addr={self.host}:{self.port}",
            f"--debug-addr={self.host}:{self.debug_port}",
            f"--state-dir={self.state_dir}",
            "--log-level=INFO",
        ]

    def _env(self) -> dict[str, str]:
        env = base_env()
        env.update(
            {
                "FERRETDB_TELEMETRY": "disable",
                # The SQLite backend supports SCRAM only in this (experimental) mode; otherwise only PLAIN. With
                # PostgreSQL it makes FerretDB keep the users itself (the same SCRAM for clients of either backend)
                # instead of passing PLAIN credentials through to PostgreSQL.
                "FERRETDB_TEST_ENABLE_NEW_AUTH": "true",
                # Used only when no user exists yet: a restart on the same data keeps the first credentials.
                "FERRETDB_SETUP_USERNAME": self.username,
                "FERRETDB_SETUP_PASSWORD": self.password,
                "FERRETDB_SETUP_DATABASE": self.database,
            }
        )
        return env

    def client(self, **kwargs: Any) -> Any:
        """A pymongo MongoClient for this server (fail-fast timeouts unless overridden)."""
        import pymongo

        options: dict[str, Any] = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000}
        options.update(kwargs)
        return pymongo.MongoClient(self.uri, **options)

    def _ready(self) -> bool:
        # ping needs no auth, but the client authenticates when it connects, so this proves credentials too.
        with contextlib.closing(self.client(serverSelectionTimeoutMS=500, connectTimeoutMS=500)) as client:
            client.admin.command("ping")
            client[self.database].list_collection_names()
        return True


class S3Server(_Server):
    """versitygw serving a local directory over the S3 API (posix backend)."""

    name = "s3"
    ready_timeout = 30.0
    region = "us-east-1"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        access_key: str,
        secret_key: str,
        port: int | None = None,
    ) -> None:
        super().__init__(workdir, port=port)
        self.access_key = access_key
        self.secret_key = secret_key
        self.data_dir = self.workdir / "data"
        self.iam_dir = self.workdir / "iam"
        self.meta_dir = self.workdir / "meta"
        self.binary = find_tool("versitygw", "VERSITYGW_BIN")

    @property
    def endpoint_url(self) -> str:
        """http://127.0.0.1:PORT, for boto3's endpoint_url and MLFLOW_S3_ENDPOINT_URL."""
        return self.url

    def _before_start(self) -> None:
        for path in (self.data_dir, self.iam_dir):
            path.mkdir(parents=True, exist_ok=True)

    def _xattrs_work(self) -> bool:
        """Tell whether the data dir's filesystem keeps user xattrs (the posix backend's default metadata)."""
        probe = self.data_dir / ".xattr-probe"
        try:
            probe.touch()
            os.setxattr(probe, "user.devstack", b"1")
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port",
            f"{self.host}:{self.port}",
            "--health",
            "/health",
            "--iam-dir",
            str(self.iam_dir),
            "posix",
        ]
        if not self._xattrs_work():
            self.meta_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--sidecar", str(self.meta_dir)]
        return [*argv, str(self.data_dir)]

    def _env(self) -> dict[str, str]:
        env = base_env()
        # Keys go through the environment, not argv, so they do not show in ps.
        env.update({"ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key})
        return env

    def _ready(self) -> bool:
        return _status_is(f"{self.endpoint_url}/health")

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(connect_timeout=2, read_timeout=30, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket; succeed if it already exists."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                raise

    def env(self) -> dict[str, str]:
        """Environment variables an S3 client (MLflow, boto3) needs to reach this server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            # Never let botocore probe the cloud metadata address: only loopback traffic is allowed here.
            "AWS_EC2_METADATA_DISABLED": "true",
        }


MODEL_MANAGEMENT = REPO_ROOT / "model-management"


@dataclass(frozen=True)
class RegistryUsers:
    """The registry's users (MLflow basic auth): the admin (harness and tests), training (writes), serving (reads)."""

    admin_password: str
    training_password: str
    serving_password: str
    secret_key: str  # the auth app's Flask secret (CSRF of its sign-up form)

    ROLES: ClassVar[tuple[str, ...]] = ("admin", "training", "serving")

    @classmethod
    def generate(cls) -> RegistryUsers:
        """Fresh random passwords."""
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))

    def client_env(self, role: str) -> dict[str, str]:
        """MLflow's own variables that make its client log in as ``role`` (admin, training or serving)."""
        if role not in self.ROLES:
            raise ValueError(f"unknown registry role {role!r}; known: {', '.join(self.ROLES)}")
        password = getattr(self, f"{role}_password")
        return {"MLFLOW_TRACKING_USERNAME": role, "MLFLOW_TRACKING_PASSWORD": password}


@functools.cache
def process_registry_users() -> RegistryUsers:
    """One set of registry users per process: every harness MLflow of a test session shares them, so the test
    process's own MLflow client (admin, from its environment) reaches each of them."""
    return RegistryUsers.generate()


class MlflowServer(_Server):
    """The MLflow tracking server with basic auth: SQLite stores, artifacts proxied to a bucket on an S3Server.

    Started like compose starts it: ``--app-name basic-auth`` with model-management/basic_auth.ini (the user
    store moved into the work dir), then model-management/provision_users.py creates the training and serving
    users; :meth:`client_env` gives a process their credentials.
    """

    name = "mlflow"
    ready_timeout = 90.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        s3: S3Server,
        bucket: str = "mlflow",
        port: int | None = None,
        python: str | None = None,
        users: RegistryUsers | None = None,
        model_name: str = "sk-learn-linear-reg-model",
    ) -> None:
        super().__init__(workdir, port=port)
        self.s3 = s3
        self.bucket = bucket
        self.python = python or sys.executable
        self.db_path = self.workdir / "mlflow.db"
        self.auth_config = self.workdir / "basic_auth.ini"
        self.users = users or process_registry_users()
        self.model_name = model_name

    @property
    def uri(self) -> str:
        """The tracking URI (also the UI's address)."""
        return self.url

    def client_env(self, role: str) -> dict[str, str]:
        """The credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) of a registry role: admin, training or serving."""
        return self.users.client_env(role)

    def _after_ready(self) -> None:
        # Every start (a restart too): the job is idempotent and puts back what a test may have changed.
        self.provision()

    def provision(self) -> None:
        """Run model-management/provision_users.py against this server (idempotent), raising with its output."""
        env = base_env() | {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_ADMIN_PASSWORD": self.users.admin_password,
            "MLFLOW_TRAINING_PASSWORD": self.users.training_password,
            "MLFLOW_SERVING_PASSWORD": self.users.serving_password,
            "MODEL_NAME": self.model_name,
            "PROVISION_TIMEOUT_SECONDS": "30",
        }
        done = subprocess.run(
            [self.python, str(MODEL_MANAGEMENT / "provision_users.py")], env=env, capture_output=True, text=True,
            timeout=90, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"provisioning MLflow users failed ({done.returncode}): {done.stderr[-2000:]}")

    def _before_start(self) -> None:
        self.s3.create_bucket(self.bucket)
        # The repository's auth config, with the user store in this work dir.
        config = configparser.ConfigParser()
        config.read(MODEL_MANAGEMENT / "basic_auth.ini")
        config["mlflow"]["database_uri"] = f"sqlite:///{self.workdir / 'basic_auth.db'}"
        with self.auth_config.open("w") as fh:
            config.write(fh)

    def _argv(self) -> list[str]:
        allowed = f"{self.host}:{self.port},localhost:{self.port},{self.host},localhost"
        return [
            self.python,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db_path}",
            "--artifacts-destination",
            f"s3://{self.bucket}/",
            "--serve-artifacts",
            "--host",
            self.host,
            "--port",
            str(self.port),
            # The DNS-rebinding guard compares the Host header, port included, with this list.
            "--allowed-hosts",
            allowed,
            "--workers",
            "1",
            "--app-name",
            "basic-auth",
        ]

    def _env(self) -> dict[str, str]:
        env = base_env()
        env.update(self.s3.env())
        env.update({
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            # Used only when the user store is empty: a restart on the same data keeps the first admin password.
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.users.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.users.secret_key,
        })
        # The GenAI job runner spawns several huey consumers that nothing here uses: spare the 2 cores.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _ready(self) -> bool:
        if not _status_is(f"{self.uri}/health"):
            return False
        # /health skips the Host check and auth; a REST call as admin proves --allowed-hosts accepts how clients
        # address us, and that the auth app is up with its admin user.
        import requests

        response = requests.get(f"{self.uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                auth=("admin", self.users.admin_password), timeout=_PROBE_TIMEOUT)
        return response.status_code == 200


class GunicornApp(_Server):
    """A Flask app under Gunicorn with per-instance state, log and Prometheus multiprocess dirs."""

    ready_timeout = 60.0
    # Longer than the shared gunicorn config's default graceful_timeout (30 s), so workers can flush.
    stop_grace = 35.0

    def __init__(
        self,
        name: str,
        app_spec: str,
        *,
        env: Mapping[str, str],
        workdir: str | os.PathLike[str],
        workers: int = 2,
        config_file: str | os.PathLike[str] | None = None,
        port: int | None = None,
        python: str | None = None,
        ready_path: str = "/health",
    ) -> None:
        super().__init__(workdir, port=port)
        self.name = name
        self.app_spec = app_spec
        self.extra_env = dict(env)
        self.workers = workers
        self.config_file = Path(config_file) if config_file is not None else None
        self.python = python or sys.executable
        self.ready_path = ready_path
        self.metrics_dir = self.workdir / "prometheus"
        self.state_dir = self.workdir / "state"
        self.app_log_dir = self.workdir / "app-logs"

    def _before_start(self) -> None:
        # Samples of a previous run's workers must not be merged into this run's /metrics.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        for path in (self.metrics_dir, self.state_dir, self.app_log_dir):
            path.mkdir(parents=True, exist_ok=True)

    def _argv(self) -> list[str]:
        argv = [self.python, "-m", "gunicorn"]
        if self.config_file is not None:
            argv += ["-c", str(self.config_file)]
        # Command-line values win over the config file's GUNICORN_BIND/GUNICORN_WORKERS defaults.
        argv += ["--bind", f"{self.host}:{self.port}", "--workers", str(self.workers), self.app_spec]
        return argv

    def _env(self) -> dict[str, str]:
        env = base_env()
        env.update(self.extra_env)
        env.update(
            {
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                "STATE_DIR": str(self.state_dir),
                "LOG_DIR": str(self.app_log_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _ready(self) -> bool:
        return _status_is(f"{self.url}{self.ready_path}")

    def pids(self) -> list[int]:
        """Process ids of the Gunicorn workers (children of the master), empty when stopped."""
        if self.pid is None:
            return []
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in children.split()]


_LISTEN_RE = re.compile(r"^(\s*listen\s+)\$\{NGINX_PORT\}", re.MULTILINE)
_LISTEN_V6_RE = re.compile(r"^\s*listen\s+\[::\]:\$\{NGINX_PORT\}[^\n]*\n?", re.MULTILINE)


_PLACEHOLDER_RE = re.compile(r"\$\{(NGINX_[A-Z0-9_]+)\}")
# The one Nginx template of the three apps; each app's values for it are in <folder>/nginx/nginx.env.
NGINX_TEMPLATE = REPO_ROOT / "compose" / "nginx.conf.template"


def nginx_settings(folder: str | os.PathLike[str]) -> dict[str, str]:
    """An app's values for the shared template: the KEY=VALUE lines of <folder>/nginx/nginx.env (as compose
    reads that file with env_file, and the Helm chart with its own parser)."""
    path = REPO_ROOT / folder / "nginx" / "nginx.env"
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        values[key.strip()] = value.strip()
    return values


def render_template(
    text: str, *, port: int, upstream: str, host: str = LOOPBACK, settings: Mapping[str, str] | None = None
) -> str:
    """Fill ${NGINX_PORT}, ${NGINX_UPSTREAM} and the app's settings; nginx's own $variables stay as they are.

    A bare `listen ${NGINX_PORT}` would bind every interface, so native runs bind it to host instead, and an
    IPv6 `listen [::]:${NGINX_PORT}` line is dropped. A placeholder left without a value is an error.
    """
    values = {**(settings or {}), "NGINX_PORT": str(port), "NGINX_UPSTREAM": upstream}
    text = _LISTEN_V6_RE.sub("", text)
    text = _LISTEN_RE.sub(lambda m: f"{m.group(1)}{host}:{port}", text)
    missing = sorted({name for name in _PLACEHOLDER_RE.findall(text) if name not in values})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)} in the Nginx template")
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)


class Nginx(_Server):
    """Nginx running one service's server-block template in front of its Gunicorn."""

    ready_timeout = 30.0

    def __init__(
        self,
        name: str,
        template_path: str | os.PathLike[str],
        *,
        upstream: str,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        binary: str | None = None,
        ready_path: str = "/health",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port=port)
        self.name = name
        self.template_path = Path(template_path)
        self.upstream = upstream
        self.settings = dict(settings or {})
        self.binary = binary or os.environ.get("NGINX_BIN") or shutil.which("nginx") or NGINX_BIN
        self.ready_path = ready_path
        self.conf_path = self.workdir / "nginx.conf"
        self.access_log = self.log_dir / f"{name}-access.log"


    @classmethod
    def for_app(cls, name: str, folder: str | os.PathLike[str], **kwargs: Any) -> Nginx:
        """Nginx in front of one of our apps: the shared template with the values of <folder>/nginx/nginx.env."""
        return cls(name, NGINX_TEMPLATE, settings=nginx_settings(folder), **kwargs)
    def render(self) -> str:
        """The full nginx.conf: a minimal main context wrapping the rendered server-block template."""
        server_block = render_template(
            self.template_path.read_text(), port=self.port, upstream=self.upstream,
            settings={"NGINX_ACCESS_LOG": str(self.access_log), **self.settings},
        )
        tmp = self.workdir / "tmp"
        # As root the workers would drop to "nobody", which cannot enter a 0700 test dir for temp files.
        user_line = "user root;\n" if os.geteuid() == 0 else ""
        return (
            f"# Generated by devstack from {self.template_path}; edit the template, not this file.\n"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"{user_line}"
            f"pid {self.workdir / 'nginx.pid'};\n"
            "error_log stderr info;\n"
            "events {\n    worker_connections 256;\n}\n"
            "http {\n"
            "    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {self.access_log};\n"
            f"    client_body_temp_path {tmp / 'client_body'};\n"
            f"    proxy_temp_path {tmp / 'proxy'};\n"
            f"    fastcgi_temp_path {tmp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {tmp / 'uwsgi'};\n"
            f"    scgi_temp_path {tmp / 'scgi'};\n\n"
            f"{server_block}\n"
            "}\n"
        )

    def write_config(self) -> Path:
        """Render nginx.conf into the work dir and create the dirs it names."""
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render())
        return self.conf_path

    def check_config(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Write the config and run `nginx -t` on it (the result carries nginx's messages in stderr)."""
        self.write_config()
        return subprocess.run(
            [*self._argv(), "-t"], capture_output=True, text=True, timeout=timeout, check=False
        )

    def _before_start(self) -> None:
        self.write_config()

    def _argv(self) -> list[str]:
        # -e: errors found before the config is read go to stderr (our log), not /var/log/nginx.
        return [self.binary, "-e", "stderr", "-c", str(self.conf_path), "-p", str(self.workdir)]

    def _ready(self) -> bool:
        return can_connect(self.port, self.host) and _status_is(f"{self.url}{self.ready_path}")


PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"


def rules_with_for_zero(source: Path, target: Path) -> list[Path]:
    """Copy the rule files, setting every alert's `for` to 0s (tests see alerts fire without waiting minutes)."""
    import yaml

    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"
        out = target / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(out)
    return written


class Prometheus(_Server):
    """Debian's prometheus scraping the apps' Gunicorn ports: monitoring/prometheus's native template and rules."""

    name = "prometheus"
    ready_timeout = 30.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        targets: Mapping[str, str],
        port: int | None = None,
        scrape_interval: str = "15s",
        alerts_for_zero: bool = False,
        alertmanagers: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, port=port)
        self.targets = dict(targets)  # job name (serving, etl, training) -> host:port of its Gunicorn
        self.scrape_interval = scrape_interval
        self.alerts_for_zero = alerts_for_zero
        # host:port of each Alertmanager the alerts go to; none: they are only seen in Prometheus.
        self.alertmanagers = list(alertmanagers)
        self.config = self.workdir / "prometheus.yml"
        self.binary = find_tool("prometheus", "PROMETHEUS_BIN")

    def _before_start(self) -> None:
        import string

        rules = PROMETHEUS_DIR / "rules"
        if self.alerts_for_zero:
            rules = self.workdir / "rules"
            rules_with_for_zero(PROMETHEUS_DIR / "rules", rules)
        template = string.Template((PROMETHEUS_DIR / "prometheus.native.yml.tmpl").read_text())
        self.config.write_text(template.substitute(
            SCRAPE_INTERVAL=self.scrape_interval,
            EVALUATION_INTERVAL=self.scrape_interval,
            RULES_GLOB=str(rules / "*.yml"),
            SERVING_TARGET=self.targets["serving"],
            ETL_TARGET=self.targets["etl"],
            TRAINING_TARGET=self.targets["training"],
            PROMETHEUS_TARGET=f"{self.host}:{self.port}",
            ALERTMANAGER_TARGETS=json.dumps(self.alertmanagers),
        ))

    def _argv(self) -> list[str]:
        return [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--log.level=warn"]

    def _ready(self) -> bool:
        return _status_is(f"{self.url}/-/ready")

    def query(self, expr: str, timeout: float = 15) -> list[dict[str, Any]]:
        """An instant query now; the result vector (AssertionError on a PromQL error)."""
        body = _http_get(f"{self.url}/api/v1/query?query={quote_plus(expr)}", timeout=timeout).json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def values(self, expr: str) -> dict[str, float]:
        """Query and map each series (labels as JSON) to its value."""
        import json

        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in self.query(expr)}

    def rules(self, timeout: float = 15) -> list[dict[str, Any]]:
        """Every loaded rule with its health and last error."""
        body = _http_get(f"{self.url}/api/v1/rules", timeout=timeout).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


ALERTMANAGER_DIR = REPO_ROOT / "monitoring" / "alertmanager"


@functools.cache
def _alertmanager_renderer() -> Any:
    """monitoring/alertmanager/render.py, the renderer compose's alertmanager-config job runs too."""
    spec = importlib.util.spec_from_file_location("mlstack_alertmanager_render", ALERTMANAGER_DIR / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alertmanager_config(webhook_url: str, timings: Mapping[str, str] | None = None) -> str:
    """The repository's Alertmanager config for a webhook URL.

    ``timings`` (group_wait, group_interval, repeat_interval) replace those of the root route and every child
    route, so a test sees notifications within seconds; routes, grouping, inhibition and receivers stay as they are.
    """
    import yaml

    text = _alertmanager_renderer().render(
        (ALERTMANAGER_DIR / "alertmanager.yml.tmpl").read_text(), {"ALERT_WEBHOOK_URL": webhook_url}
    )
    if not timings:
        return text
    config = yaml.safe_load(text)
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        route.update({key: value for key, value in timings.items() if key in route or route is config["route"]})
        routes += route.get("routes", [])
    return yaml.safe_dump(config, sort_keys=False)


class Alertmanager(_Server):
    """Debian's prometheus-alertmanager with the repository's config (monitoring/alertmanager), one instance."""

    name = "alertmanager"
    ready_timeout = 30.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        webhook_url: str,
        port: int | None = None,
        timings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port=port)
        self.webhook_url = webhook_url
        self.timings = dict(timings or {})
        self.config = self.workdir / "alertmanager.yml"
        try:  # Debian's name, then the upstream one
            self.binary = find_tool("prometheus-alertmanager", "ALERTMANAGER_BIN")
        except FileNotFoundError:
            self.binary = find_tool("alertmanager", "ALERTMANAGER_BIN")

    @property
    def target(self) -> str:
        """host:port, as Prometheus' alerting section names it."""
        return f"{self.host}:{self.port}"

    def _before_start(self) -> None:
        _alertmanager_renderer().write(self.config, alertmanager_config(self.webhook_url, self.timings))

    def _argv(self) -> list[str]:
        # An empty cluster address: a single instance, no gossip port to pick or to collide.
        return [self.binary, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--cluster.listen-address=", "--log.level=warn"]

    def _ready(self) -> bool:
        return _status_is(f"{self.url}/-/ready")

    def alerts(self, timeout: float = 15) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (API v2), with its status: active, suppressed (inhibitedBy), ..."""
        return _http_get(f"{self.url}/api/v2/alerts", timeout=timeout).json()

    def post_alerts(self, alerts: list[dict[str, Any]], timeout: float = 15) -> None:
        """Send alerts as Prometheus does (API v2: labels, annotations, startsAt, endsAt)."""
        import requests

        requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=timeout).raise_for_status()
