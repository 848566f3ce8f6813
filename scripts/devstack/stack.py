"""The whole stack natively: FerretDB, S3, MLflow, then serving, ETL and training, each behind its Nginx."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from devstack.jaeger import Jaeger
from devstack.ports import pick_port
from devstack.servers import (
    REPO_ROOT,
    Alertmanager,
    FerretDB,
    GunicornApp,
    MlflowServer,
    Nginx,
    Prometheus,
    RegistryUsers,
    S3Server,
    stop_all,
)
from devstack.webhook import WebhookReceiver

log = logging.getLogger(__name__)

MONGO_USER = "mlstack"
DEFAULT_MONGO_DB = "DUMMY"
MODEL_NAME = "sk-learn-linear-reg-model"
MODEL_ALIAS = "champion"

# Every kind of server a stack starts.
Server = FerretDB | S3Server | MlflowServer | GunicornApp | Nginx | Prometheus | Alertmanager | Jaeger

_VERSION_SERIES = re.compile(r'^serving_model_version\{[^}]*pid="(\d+)"[^}]*\}\s+(\S+)$', re.MULTILINE)


def worker_model_versions(metrics_text: str) -> dict[int, int]:
    """Serving's /metrics text -> the registry version each live worker serves, by pid (0: none loaded yet).

    Answers sampled through Nginx may never reach a lagging worker; the merged /metrics shows every worker.
    """
    return {int(pid): int(float(value)) for pid, value in _VERSION_SERIES.findall(metrics_text)}


@dataclass(frozen=True)
class ServiceSpec:
    """Where one Flask service lives in the repo and how Gunicorn loads it."""

    name: str
    folder: str
    module: str

    @property
    def app_spec(self) -> str:
        """Gunicorn's APP_MODULE: the app factory called once per worker."""
        return f"{self.module}.app:create_app()"

    @property
    def root(self) -> Path:
        """The service's folder in the repo."""
        return REPO_ROOT / self.folder

    @property
    def gunicorn_config(self) -> Path | None:
        """The service's gunicorn.conf.py, if it has one yet."""
        path = self.root / "gunicorn.conf.py"
        return path if path.is_file() else None

    @property
    def nginx_settings(self) -> Path:
        """The service's values for the shared Nginx template (compose/nginx.conf.template)."""
        return self.root / "nginx" / "nginx.env"

    def importable(self) -> bool:
        """Tell whether the service's app module can be imported by this interpreter."""
        try:
            return importlib.util.find_spec(f"{self.module}.app") is not None
        except ImportError:
            return False


# Start order matters: ETL needs serving's URL and training needs serving's reload URL.
SERVICES = (
    ServiceSpec("serving", "serving-flask", "serving"),
    ServiceSpec("etl", "etl-flask-scheduler", "etl"),
    ServiceSpec("training", "training-flask-scheduler", "training"),
)


def resolve_services(services: Iterable[str | ServiceSpec] | None) -> tuple[ServiceSpec, ...]:
    """ServiceSpecs for names like "serving" (all services when None), kept in start order."""
    if services is None:
        return SERVICES
    by_name = {spec.name: spec for spec in SERVICES}
    wanted: list[ServiceSpec] = []
    for item in services:
        if isinstance(item, ServiceSpec):
            wanted.append(item)
        elif item in by_name:
            wanted.append(by_name[item])
        else:
            raise ValueError(f"unknown service {item!r}; known: {', '.join(by_name)}")
    order = {spec.name: i for i, spec in enumerate(SERVICES)}
    return tuple(sorted(wanted, key=lambda spec: order.get(spec.name, len(order))))


def _new_secrets() -> dict[str, str]:
    return {
        "mongo_password": secrets.token_urlsafe(18),
        "s3_access_key": "devstack" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_urlsafe(24),
        "admin_token": secrets.token_urlsafe(32),
        "service_token": secrets.token_urlsafe(32),
        # MLflow's basic auth: its admin (the harness), training's and serving's users, the auth app's secret key.
        "mlflow_admin_password": secrets.token_urlsafe(24),
        "mlflow_training_password": secrets.token_urlsafe(24),
        "mlflow_serving_password": secrets.token_urlsafe(24),
        "mlflow_secret_key": secrets.token_urlsafe(24),
    }


def load_or_create_secrets(workdir: Path) -> dict[str, str]:
    """Credentials for a work dir: made once, then reused (FerretDB keeps its first user's password).

    A work dir made before a secret existed gets that secret added (the others keep their values).
    """
    path = workdir / "secrets.json"
    fresh = _new_secrets()
    if path.is_file():
        values = json.loads(path.read_text())
        if set(fresh) <= set(values):
            return values
        values = fresh | values
        path.unlink()
    else:
        values = fresh
    workdir.mkdir(parents=True, exist_ok=True)
    # Created private, so the secrets are never readable by others even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh, indent=2)
    return values


def registry_users(values: Mapping[str, str]) -> RegistryUsers:
    """The registry users kept in a work dir's secrets (load_or_create_secrets)."""
    return RegistryUsers(
        admin_password=values["mlflow_admin_password"],
        training_password=values["mlflow_training_password"],
        serving_password=values["mlflow_serving_password"],
        secret_key=values["mlflow_secret_key"],
    )


class NativeStack:
    """Starts the infrastructure and every importable service, wires their environment, stops in reverse."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        admin_token: str,
        service_token: str | None = None,
        workers: int = 2,
        extra_env: Mapping[str, str] | None = None,
        mongo_db: str = DEFAULT_MONGO_DB,
        ports: Mapping[str, int | list[int]] | None = None,
        ferretdb: FerretDB | None = None,
        s3: S3Server | None = None,
        mlflow: MlflowServer | None = None,
        services: Iterable[str | ServiceSpec] | None = None,
        prometheus: bool = False,
        registry_users: RegistryUsers | None = None,
        alert_webhook_url: str | None = None,
        tracing: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.admin_token = admin_token
        # The ETL's token towards serving; None: the work dir's own (secrets.json), set when the stack starts.
        self.service_token = service_token
        self.workers = workers
        self.extra_env = dict(extra_env or {})
        self.mongo_db = mongo_db
        # Preferred ports by component ("ferretdb", "s3", "mlflow", "serving", "serving-gunicorn", ...).
        self.ports = dict(ports or {})
        # Services asked for by name must start; with the default (all), missing ones are skipped.
        self.strict = services is not None
        self.services = resolve_services(services)
        # Servers handed in belong to the caller (e.g. session fixtures): started if needed, never stopped.
        self._borrowed = {id(s) for s in (ferretdb, s3, mlflow) if s is not None}
        self.ferretdb = ferretdb
        self.s3 = s3
        self.mlflow = mlflow
        # MLflow's users when this stack starts its own MLflow; None: the work dir's own (secrets.json).
        self.registry_users = registry_users
        self.apps: dict[str, GunicornApp] = {}
        self.nginx: dict[str, Nginx] = {}
        self.skipped: list[str] = []
        # Prometheus scraping the three apps with the repository's rules, sending alerts to Alertmanager (make dev);
        # tests start their own.
        self.with_prometheus = prometheus
        self.prometheus: Prometheus | None = None
        self.alertmanager: Alertmanager | None = None
        # Where Alertmanager posts notifications; None: a receiver in this process that logs them.
        self.alert_webhook_url = alert_webhook_url
        self.alert_log: WebhookReceiver | None = None
        # Jaeger receiving every app's traces (make dev DEVSTACK_ARGS=--tracing); built on first use, minutes.
        self.with_tracing = tracing
        self.jaeger: Jaeger | None = None
        self._started: list[Server] = []

    def _port(self, key: str) -> int:
        wanted = self.ports.get(key, [])
        return pick_port([wanted] if isinstance(wanted, int) else list(wanted))

    def _start(self, server: Server) -> None:
        server.start()
        if id(server) not in self._borrowed:
            self._started.append(server)

    def start(self) -> Self:
        """Start everything in dependency order; on failure stop what started and re-raise."""
        try:
            self._start_infra()
            for spec in self.services:
                self._start_service(spec)
            if self.with_prometheus:
                self._start_prometheus()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_infra(self) -> None:
        creds = load_or_create_secrets(self.workdir)
        self.service_token = self.service_token or creds["service_token"]
        if self.with_tracing:
            self.jaeger = Jaeger(self.workdir / "jaeger", port=self._port("jaeger"))
            self._start(self.jaeger)
        if self.ferretdb is None:
            self.ferretdb = FerretDB(
                self.workdir / "ferretdb",
                username=MONGO_USER,
                password=creds["mongo_password"],
                port=self._port("ferretdb"),
            )
        self._start(self.ferretdb)
        if self.s3 is None:
            self.s3 = S3Server(
                self.workdir / "s3",
                access_key=creds["s3_access_key"],
                secret_key=creds["s3_secret_key"],
                port=self._port("s3"),
            )
        self._start(self.s3)
        if self.mlflow is None:
            self.mlflow = MlflowServer(
                self.workdir / "mlflow", s3=self.s3, port=self._port("mlflow"),
                users=self.registry_users or registry_users(creds), model_name=MODEL_NAME,
            )
        self._start(self.mlflow)

    def _service_env(self, spec: ServiceSpec) -> dict[str, str]:
        assert self.ferretdb is not None and self.mlflow is not None and self.service_token is not None
        env = {
            "ADMIN_TOKEN": self.admin_token,
            "MONGO_URI": self.ferretdb.uri,
            "MONGO_DB": self.mongo_db,
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
        }
        serving_url = self.nginx["serving"].url if "serving" in self.nginx else None
        if spec.name in ("serving", "etl"):
            env["SERVICE_TOKEN"] = self.service_token  # training has no use for it: not given
        if spec.name in ("serving", "training"):
            # Each logs in to the registry as its own user (same name as the service) and keeps MLflow's own
            # model loaders closed (models are loaded by mlstack_core.model_files).
            env.update(self.mlflow.client_env(spec.name))
            env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        if spec.name == "serving":
            env.update({"MODEL_NAME": MODEL_NAME, "MODEL_ALIAS": MODEL_ALIAS})
        elif spec.name == "etl" and serving_url:
            env["PREDICTAPI"] = f"{serving_url}/predict"
        elif spec.name == "training" and serving_url:
            env["LOADMODELAPI"] = f"{serving_url}/loadModel/"
        if self.jaeger is not None:
            env.update(self.jaeger.app_env())
        env.update(self.extra_env)
        return env

    def _skip(self, spec: ServiceSpec, reason: str) -> None:
        if self.strict:
            raise RuntimeError(f"cannot start {spec.name}: {reason}")
        log.warning("skipping %s: %s", spec.name, reason)
        self.skipped.append(spec.name)

    def _start_service(self, spec: ServiceSpec) -> None:
        if not spec.importable():
            self._skip(spec, f"{spec.module}.app is not importable (not written or installed yet)")
            return
        if not spec.nginx_settings.is_file():
            self._skip(spec, f"no Nginx settings at {spec.nginx_settings}")
            return
        app = GunicornApp(
            spec.name,
            spec.app_spec,
            env=self._service_env(spec),
            workdir=self.workdir / spec.name,
            workers=self.workers,
            config_file=spec.gunicorn_config,
            port=self._port(f"{spec.name}-gunicorn"),
        )
        self.apps[spec.name] = app
        self._start(app)
        nginx = Nginx.for_app(
            f"{spec.name}-nginx",
            spec.folder,
            upstream=f"{app.host}:{app.port}",
            workdir=self.workdir / f"{spec.name}-nginx",
            port=self._port(spec.name),
        )
        self.nginx[spec.name] = nginx
        self._start(nginx)

    def _start_prometheus(self) -> None:
        missing = {"serving", "etl", "training"} - set(self.apps)
        if missing:
            log.warning("not starting Prometheus: %s not running", ", ".join(sorted(missing)))
            return
        webhook_url = self.alert_webhook_url
        if not webhook_url:
            self.alert_log = WebhookReceiver(log_alerts=True).start()
            webhook_url = self.alert_log.url
        self.alertmanager = Alertmanager(
            self.workdir / "alertmanager", webhook_url=webhook_url, port=self._port("alertmanager")
        )
        self._start(self.alertmanager)
        self.prometheus = Prometheus(
            self.workdir / "prometheus",
            targets={name: f"{app.host}:{app.port}" for name, app in self.apps.items()},
            port=self._port("prometheus"),
            alertmanagers=[self.alertmanager.target],
        )
        self._start(self.prometheus)

    @property
    def mongo_uri(self) -> str:
        """The MongoDB URI with credentials (what the services get as MONGO_URI)."""
        assert self.ferretdb is not None, "stack not started"
        return self.ferretdb.uri

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking URI."""
        assert self.mlflow is not None, "stack not started"
        return self.mlflow.uri

    def stop_app(self, name: str, *, nginx: bool = False) -> None:
        """Stop one service's Gunicorn (its Nginx keeps answering 502/503 unless nginx=True)."""
        if nginx:
            self.nginx[name].stop()
        self.apps[name].stop()

    def start_app(self, name: str, *, env: Mapping[str, str] | None = None) -> None:
        """Start a stopped service again on the same ports, Gunicorn first, then its Nginx if stopped.

        ``env`` overrides variables of the service's usual environment for this start (a fault to inject);
        the next start without it restores the usual one.
        """
        spec = next(spec for spec in self.services if spec.name == name)
        self.apps[name].extra_env = self._service_env(spec) | dict(env or {})
        self.apps[name].start()
        self.nginx[name].start()

    @property
    def servers(self) -> list[Server]:
        """The servers this stack started (and will stop), oldest first."""
        return list(self._started)

    @property
    def urls(self) -> dict[str, str]:
        """Every address of the running stack (the MongoDB URI with its password masked)."""
        urls: dict[str, str] = {}
        for name, nginx in self.nginx.items():
            urls[name] = nginx.url
        for name, app in self.apps.items():
            urls[f"{name}-gunicorn"] = app.url
        if self.mlflow is not None:
            urls["mlflow"] = self.mlflow.uri
        if self.s3 is not None:
            urls["s3"] = self.s3.endpoint_url
        if self.ferretdb is not None:
            urls["mongo"] = self.ferretdb.display_uri
        if self.prometheus is not None:
            urls["prometheus"] = self.prometheus.url
        if self.alertmanager is not None:
            urls["alertmanager"] = self.alertmanager.url
        if self.jaeger is not None:
            urls["jaeger"] = self.jaeger.url
        return urls

    def stop(self) -> None:
        """Stop what this stack started, newest first; logs failures and never raises."""
        stop_all(self._started)
        if self.alert_log is not None:
            self.alert_log.stop()
            self.alert_log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()
