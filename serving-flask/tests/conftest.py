"""Fixtures of the serving unit tests: an app with a stand-in registry and no database.

`client`, `admin` and `offline_settings` come from the shared devstack pytest plugin.
"""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import Pipeline

from mlstack_core.data.generator import FEATURES, generate_frame


class FakeRegistry:
    """Stands in for MLflow in unit tests: versions of fitted pipelines keyed by alias."""

    def __init__(self) -> None:
        self.models: dict[str, object] = {}
        self.aliases: dict[str, str] = {}
        self.loads = 0
        self.fail = False

    def add(self, version: str, model: object, alias: str = "champion") -> None:
        self.models[version] = model
        self.aliases[alias] = version

    def version_for_alias(self, name, alias):
        if self.fail:
            raise ConnectionError("registry down")
        version = self.aliases.get(alias)
        return (version, f"run-{version}") if version else None

    def load(self, name, version):
        self.loads += 1
        return self.models[version]


def fit_pipeline(seed: int = 0, columns=FEATURES) -> Pipeline:
    """An ElasticNet pipeline fitted on generated rows with named columns, like training does."""
    frame = generate_frame(500, seed=seed)
    model = Pipeline([("model", ElasticNet(alpha=0.5, l1_ratio=0.01))])
    model.fit(pd.DataFrame(frame[list(columns)]), frame["quality"])
    return model


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def app(offline_settings, registry):
    from serving.app import create_app

    # No quality monitor: its thread would outlive the test, polling the closed MongoDB port and logging into
    # pytest's closed streams (tests/test_quality_monitor.py runs it on its own).
    return create_app(
        offline_settings | {"model_watch": False, "store_predictions": False, "seed_rows": 0,
                            "monitor_enabled": False},
        registry=registry,
    )



@pytest.fixture
def fit():
    """A factory of fitted pipelines (tests call fit(seed))."""
    return fit_pipeline
