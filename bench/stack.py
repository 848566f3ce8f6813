"""Real servers for the benchmarks: FerretDB, S3 and MLflow once, then each serving variant behind its own Nginx.

Variants, all serving the same registered ElasticNet, all behind the same Nginx server block (serving's
template: HTTP/1.1 with an upstream keepalive pool) so the proxy costs the same for each:

- ``ours``: the serving service (``serving.app:create_app()``) under Gunicorn with the service's config;
- ``original_faithful``: :func:`bench.original_apps.faithful_app`, the original template's /predictDummy/ as
  written (two predictions, an INFO log line to a rotating file and Prometheus metrics per request);
- ``original_light``: :func:`bench.original_apps.light_app`, one predict, no logging, no metrics;
- ``mlflow``: ``mlflow models serve --env-manager local`` (uvicorn/FastAPI, one worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT
from devstack.servers import FerretDB, GunicornApp, MlflowServer, Nginx, S3Server, _Server, _status_is, stop_all
from devstack.stack import DEFAULT_MONGO_DB, MODEL_ALIAS, MODEL_NAME

log = logging.getLogger("bench")

SERVING_ROOT = REPO_ROOT / "serving-flask"
EXPERIMENT = "bench"
ADMIN_TOKEN = "bench-" + secrets.token_urlsafe(24)
# The ETL's identity towards serving (row ids and quality on /predict); the bench ETL sends it.
SERVICE_TOKEN = "bench-service-" + secrets.token_urlsafe(24)


class MlflowModelServer(_Server):
    """``mlflow models serve`` of one model URI (uvicorn, FastAPI scoring server)."""

    ready_timeout = 120.0

    def __init__(self, workdir: str | os.PathLike[str], *, model_uri: str, tracking_uri: str,
                 workers: int = 1, port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self.name = "mlflow-serve"
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.workers = workers

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager", "local",
                "-h", self.host, "-p", str(self.port), "-w", str(self.workers)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The CLI starts `uvicorn` by name: it must find the venv's.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _ready(self) -> bool:
        return _status_is(f"{self.url}/health")


class Variant:
    """One serving variant: its app server, its Nginx, the paths to call and how to shape a body."""

    def __init__(self, name: str, app: _Server, nginx: Nginx, *, one_row_path: str, batch_path: str | None) -> None:
        self.name = name
        self.app = app
        self.nginx = nginx
        self.one_row_path = one_row_path
        self.batch_path = batch_path

    @property
    def url(self) -> str:
        """Nginx's address."""
        return self.nginx.url

    def app_pids(self) -> list[int]:
        """Root pid of the app server (its workers are below it)."""
        return [self.app.pid] if self.app.pid else []

    def nginx_pids(self) -> list[int]:
        """Root pid of Nginx."""
        return [self.nginx.pid] if self.nginx.pid else []

    def stop(self) -> None:
        """Stop Nginx, then the app."""
        for server in (self.nginx, self.app):
            with contextlib.suppress(Exception):
                server.stop()


class BenchStack:
    """FerretDB, S3, MLflow and the variants asked for; everything stops in reverse order."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, keep: bool = False) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mlstack-bench-"))
        self.keep = keep
        self.mongo_password = secrets.token_urlsafe(18)
        self.ferretdb: FerretDB | None = None
        self.s3: S3Server | None = None
        self.mlflow: MlflowServer | None = None
        self.variants: dict[str, Variant] = {}
        self._started: list[Any] = []

    # ------------------------------------------------------------------ infrastructure

    def start_infra(self, *, mlflow: bool = True) -> BenchStack:
        """FerretDB always; S3 and MLflow when models are needed."""
        self.ferretdb = FerretDB(self.workdir / "ferretdb", username="bench", password=self.mongo_password)
        self._start(self.ferretdb)
        if mlflow:
            self.s3 = S3Server(self.workdir / "s3", access_key="bench" + secrets.token_hex(6),
                               secret_key=secrets.token_urlsafe(24))
            self._start(self.s3)
            self.mlflow = MlflowServer(self.workdir / "mlflow", s3=self.s3)
            self._start(self.mlflow)
            # MLflow's fluent API keeps its URIs in these variables, and every server started later inherits them:
            # they must name this stack's server, never one of an earlier benchmark.
            os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = self.mlflow.uri
            # The benchmark's own client (registering models) logs in as the registry's admin.
            os.environ.update(self.mlflow.client_env("admin"))
        return self

    def _start(self, server: Any) -> None:
        server.start()
        self._started.append(server)

    def registry(self) -> Any:
        """The training service's registry client on this MLflow."""
        from training.registry import ModelRegistry

        assert self.mlflow is not None
        return ModelRegistry(self.mlflow.uri, model_name=MODEL_NAME, experiment_name=EXPERIMENT)

    def register_model(self, *, seed: int, rows: int = 2000, champion: bool = True) -> str:
        """Fit the training pipeline (ElasticNet, the training defaults) and register it like training does."""
        import pandas as pd

        from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
        from training.model import build_pipeline

        frame = generate_frame(rows, seed=seed)
        x = pd.DataFrame(frame[list(FEATURES)])
        model = build_pipeline(alpha=0.5, l1_ratio=0.01, standardize=False, seed=seed).fit(x, frame[TARGET])
        registry = self.registry()
        candidate = registry.log_candidate(model, input_example=x.head(5), params={"seed": seed}, metrics={},
                                           tags={}, run_name=f"bench-{seed}")
        if champion:
            registry.set_alias(MODEL_ALIAS, candidate.version)
        log.info("registered version %s (champion=%s)", candidate.version, champion)
        return candidate.version

    # ------------------------------------------------------------------ variants

    def _nginx(self, name: str, app_host: str, app_port: int) -> Nginx:
        return Nginx.for_app(f"{name}-nginx", SERVING_ROOT, upstream=f"{app_host}:{app_port}",
                             workdir=self.workdir / f"{name}-nginx")

    def serving_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The serving service's environment (as the native stack sets it)."""
        assert self.ferretdb is not None and self.mlflow is not None
        env = {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVICE_TOKEN": SERVICE_TOKEN,
            "MONGO_URI": self.ferretdb.uri,
            "MONGO_DB": DEFAULT_MONGO_DB,
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
            "MODEL_NAME": MODEL_NAME,
            "MODEL_ALIAS": MODEL_ALIAS,
            "SEED_ROWS": "0",
            "LOG_LEVEL": "WARNING",
            # The quality monitor's window query sorts the predictions by created_at; FerretDB (SQLite backend)
            # does not use the index for that, so each pass scans the whole collection: millions of stored
            # benchmark predictions would keep FerretDB busy between runs. Not part of the request path.
            "MONITOR_ENABLED": "false",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        }
        env.update(self.mlflow.client_env("serving"))
        env.update(extra or {})
        return env

    def start_ours(self, *, workers: int = 2, threads: int | None = None,
                   extra_env: Mapping[str, str] | None = None, name: str = "ours") -> Variant:
        """The serving service, Gunicorn with its own config (threads: its default unless given), behind Nginx."""
        env = self.serving_env(extra_env)
        if threads is not None:
            env["GUNICORN_THREADS"] = str(threads)
        app = GunicornApp(name, "serving.app:create_app()", env=env, workdir=self.workdir / name, workers=workers,
                          config_file=SERVING_ROOT / "gunicorn.conf.py", ready_path="/ready")
        return self._variant(name, app, one_row_path="/predict", batch_path="/predict")

    def start_etl(self, *, serving_url: str, database: str = DEFAULT_MONGO_DB, name: str = "etl") -> Variant:
        """The ETL service (schedule off: only what the benchmark sends), forwarding to serving, behind Nginx."""
        etl_root = REPO_ROOT / "etl-flask-scheduler"
        env = self.serving_env({"PREDICTAPI": f"{serving_url}/predict", "SCHEDULER_ENABLED": "false",
                                "MONGO_DB": database, "PREDICT_TIMEOUT_SECONDS": "120"})
        app = GunicornApp(name, "etl.app:create_app()", env=env, workdir=self.workdir / name, workers=2,
                          config_file=etl_root / "gunicorn.conf.py")
        nginx = Nginx.for_app(f"{name}-nginx", etl_root, upstream=f"{app.host}:{app.port}",
                              workdir=self.workdir / f"{name}-nginx")
        app.start()
        nginx.start()
        variant = Variant(name, app, nginx, one_row_path="/ingest", batch_path="/ingest")
        self.variants[name] = variant
        return variant

    def start_original(self, version: str, *, kind: str = "faithful", workers: int = 2) -> Variant:
        """The original template's path (``faithful`` or ``light``, see bench.original_apps), Gunicorn sync
        workers (its defaults), behind Nginx."""
        assert self.mlflow is not None
        name = f"original_{kind}"
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
            "MODEL_URI": f"models:/{MODEL_NAME}/{version}",
            "PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}",
            "ORIGINAL_LOG_FILE": str(self.workdir / name / "logs" / "info.log"),
            **self.mlflow.client_env("serving"),
        }
        app = GunicornApp(name, f"bench.original_apps:{kind}_app()", env=env, workdir=self.workdir / name,
                          workers=workers)
        return self._variant(name, app, one_row_path="/predictDummy/", batch_path=None)

    def start_floor(self, kind: str, *, workers: int = 2, threads: int | None = None,
                    name: str | None = None) -> Variant:
        """A no-work app (``flask`` or ``wsgi``, see bench.floor_apps) under our Gunicorn config, behind Nginx."""
        spec = "bench.floor_apps:flask_app()" if kind == "flask" else "bench.floor_apps:wsgi_app"
        name = name or f"floor_{kind}"
        env = {"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}", "SERVICE_NAME": name}
        if threads is not None:
            env["GUNICORN_THREADS"] = str(threads)
        app = GunicornApp(name, spec, env=env, workdir=self.workdir / name, workers=workers,
                          config_file=SERVING_ROOT / "gunicorn.conf.py")
        return self._variant(name, app, one_row_path="/predict", batch_path="/predict")

    def start_mlflow_serve(self, version: str, *, workers: int = 1, name: str = "mlflow") -> Variant:
        """``mlflow models serve`` on the same version, behind Nginx."""
        assert self.mlflow is not None
        app = MlflowModelServer(self.workdir / name, model_uri=f"models:/{MODEL_NAME}/{version}",
                                tracking_uri=self.mlflow.uri, workers=workers)
        return self._variant(name, app, one_row_path="/invocations", batch_path="/invocations")

    def _variant(self, name: str, app: Any, *, one_row_path: str, batch_path: str | None) -> Variant:
        app.start()
        nginx = self._nginx(name, app.host, app.port)
        try:
            nginx.start()
        except BaseException:
            app.stop()
            raise
        variant = Variant(name, app, nginx, one_row_path=one_row_path, batch_path=batch_path)
        self.variants[name] = variant
        return variant

    def stop_variant(self, name: str) -> None:
        """Stop one variant (Nginx and app)."""
        variant = self.variants.pop(name, None)
        if variant is not None:
            variant.stop()

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        """Stop every variant and the infrastructure; delete the work dir unless asked to keep it."""
        for name in list(self.variants):
            self.stop_variant(name)
        stop_all(self._started)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            os.environ.pop(name, None)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
