"""Gunicorn configuration of the training service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "training")

from mlstack_core.gunicorn_conf import *  # noqa: F403
