"""Fixtures of the training tests: settings with no reachable database, registry or serving, and no scheduler."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def unreachable_config(offline_settings: dict[str, Any]) -> dict[str, Any]:
    """Settings pointing every dependency at a closed loopback port, with small timeouts."""
    return offline_settings | {
        "scheduler_enabled": False,
        "mlflow_tracking_uri": "http://127.0.0.1:1",
        "load_model_api": "http://127.0.0.1:1/loadModel/",
        "serving_nudge_retries": 0,
    }


@pytest.fixture
def app(unreachable_config: dict[str, Any]):
    from training.app import create_app

    return create_app(unreachable_config)


@pytest.fixture
def fast_mlflow_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """No client-side retries against the closed registry port, so a failing call costs milliseconds."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
