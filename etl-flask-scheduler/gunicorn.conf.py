"""Gunicorn configuration of the ETL service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "etl")

from mlstack_core.gunicorn_conf import *  # noqa: F403
