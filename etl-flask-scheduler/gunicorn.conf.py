"""Gunicorn configuration of the ETL service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "etl")

from mlstack_core.gunicorn_conf import *  # noqa: F403

# What `gunicorn --config gunicorn.conf.py` serves when no app is named on the command line (the image's CMD).
wsgi_app = "etl.app:create_app()"
