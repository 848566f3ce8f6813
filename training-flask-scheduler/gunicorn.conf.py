"""Gunicorn configuration of the training service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "training")

from mlstack_core.gunicorn_conf import *  # noqa: F403

# The scheduler runs in a child of the master, not in a request worker (see mlstack_core.gunicorn_scheduler).
from mlstack_core.gunicorn_scheduler import on_exit, when_ready  # noqa: F401

# What the image runs (compose/app.Dockerfile); a command-line app, as in the native stack, takes precedence.
wsgi_app = "training.app:create_app()"
