"""Fixtures of the ETL unit tests: an app with no reachable database and no scheduler.

`client`, `admin` and `offline_settings` come from the shared devstack pytest plugin.
"""

import pytest


@pytest.fixture
def app(offline_settings):
    from etl.app import create_app

    return create_app(
        offline_settings
        | {"scheduler_enabled": False, "predict_api": "http://127.0.0.1:1/predict", "predict_retries": 0}
    )
