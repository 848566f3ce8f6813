"""Fixtures of the ETL unit tests: an app with no reachable database and no scheduler."""

import pytest

ADMIN_TOKEN = "etl-test-token-0123456789abc"


@pytest.fixture
def app(tmp_path):
    from etl.app import create_app

    return create_app(
        {
            "admin_token": ADMIN_TOKEN,
            "mongo_uri": "mongodb://127.0.0.1:1/",
            "mongo_timeout_ms": 200,
            "state_dir": tmp_path / "state",
            "log_dir": tmp_path / "logs",
            "scheduler_enabled": False,
            "predict_api": "http://127.0.0.1:1/predict",
            "predict_retries": 0,
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
