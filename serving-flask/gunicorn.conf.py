"""Gunicorn configuration of the serving service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "serving")

from mlstack_core.gunicorn_conf import *  # noqa: F403

# What the image runs (compose/app.Dockerfile); a command-line app, as in the native stack, takes precedence.
wsgi_app = "serving.app:create_app()"
