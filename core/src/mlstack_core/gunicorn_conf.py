"""Gunicorn settings and hooks shared by every service; each service's gunicorn.conf.py imports these.

Import this module only from a gunicorn.conf.py: it sets PROMETHEUS_MULTIPROC_DIR before anything imports
prometheus_client, so every worker writes its samples where /metrics can merge them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_SERVICE = os.environ.get("SERVICE_NAME", "mlstack")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", f"/tmp/mlstack-metrics/{_SERVICE}")  # noqa: S108

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# SIGTERM gives workers this long to finish requests and flush buffered writes before they are killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = None  # Nginx logs requests; the app logs what it does
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Gunicorn's control socket defaults to one path per user: several services on one host would collide.
control_socket_disable = True
# Nginx bounds request lines and headers (large_client_header_buffers: 8k a line, 32k in all) and answers over
# that in JSON. Gunicorn's tighter defaults (a 4094-byte request line, 100 headers) would answer what Nginx let
# through with a plain-text 400, so these sit at or above anything Nginx forwards (it appends to
# X-Forwarded-For, hence a field size above 8k).
limit_request_line = 8190
limit_request_fields = 32768
limit_request_field_size = 16384


def on_starting(server) -> None:
    """Wipe the multiprocess metrics dir: samples of a previous run's workers must not be merged."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def post_fork(server, worker) -> None:
    """In a new worker, before it loads the app: its registry calls get the request budget (registry_calls)."""
    from mlstack_core.registry_calls import mark_request_worker

    mark_request_worker()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges from the merged view."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker) -> None:
    """Run the app's shutdown callbacks (flush buffers, stop threads) in the exiting worker."""
    from mlstack_core.lifecycle import run_shutdown_callbacks

    run_shutdown_callbacks()
