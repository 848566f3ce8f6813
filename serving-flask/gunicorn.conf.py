"""Gunicorn configuration of the serving service (shared hooks live in mlstack_core.gunicorn_conf)."""

import os

os.environ.setdefault("SERVICE_NAME", "serving")

from mlstack_core.gunicorn_conf import *  # noqa: F403

# What `gunicorn --config gunicorn.conf.py` serves when no app is named on the command line (the image's CMD).
wsgi_app = "serving.app:create_app()"
