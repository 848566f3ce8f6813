"""The model watcher: a starting worker loads before it takes requests, and the watcher survives failures."""

from __future__ import annotations

import threading

import pytest

from devstack.polling import wait_until
from serving.model_store import ModelStore


class GatedRegistry:
    """The stand-in registry, with loads that wait until the test opens the gate (a slow artifact store)."""

    def __init__(self, registry) -> None:
        self.inner = registry
        self.gate = threading.Event()

    def add(self, version, model) -> None:
        self.inner.add(version, model)

    def version_for_alias(self, name, alias):
        return self.inner.version_for_alias(name, alias)

    def load(self, name, version):
        self.gate.wait(30)
        return self.inner.load(name, version)


@pytest.fixture
def gated(registry) -> GatedRegistry:
    return GatedRegistry(registry)


def _store(registry, tmp_path, poll: float = 0.5) -> ModelStore:
    return ModelStore(registry, name="m", alias="champion", poll_seconds=poll, marker=tmp_path / "marker")


def test_a_starting_worker_has_its_model_before_create_app_returns(offline_settings, gated, fit):
    from serving.app import create_app

    registry = gated
    registry.add("3", fit(3))
    registry.gate.set()
    settings = offline_settings | {"model_watch": True, "store_predictions": False, "seed_rows": 0,
                                   "monitor_enabled": False, "model_startup_wait_seconds": 20}
    app = create_app(settings, registry=registry)
    try:
        store = app.extensions["model_store"]
        assert store.model is not None and store.model.version == "3"
        assert app.test_client().get("/model").get_json()["model"]["version"] == "3"
    finally:
        app.extensions["model_store"].stop()


def test_startup_wait_is_bounded_when_the_registry_hangs(offline_settings, gated, fit):
    from serving.app import create_app

    registry = gated  # gate closed: the load hangs
    registry.add("1", fit(1))
    settings = offline_settings | {"model_watch": True, "store_predictions": False, "seed_rows": 0,
                                   "monitor_enabled": False, "model_startup_wait_seconds": 0.2}
    app = create_app(settings, registry=registry)
    store = app.extensions["model_store"]
    try:
        assert store.model is None
        response = app.test_client().get("/model")
        assert response.get_json()["model"] is None
        registry.gate.set()
        wait_until(lambda: store.model is not None, 10, "the watcher to load once the registry answers")
        assert store.model.version == "1"
    finally:
        store.stop()


def test_without_a_champion_the_first_check_ends_the_wait(registry, tmp_path):
    store = _store(registry, tmp_path)
    store.start_watching()
    try:
        assert store.wait_first_check(10)
        assert store.model is None
        assert "holds the alias" in store.last_error
    finally:
        store.stop()


def test_the_watcher_survives_an_unexpected_error_and_follows_the_alias(registry, fit, tmp_path, monkeypatch):
    registry.add("1", fit(1))
    store = _store(registry, tmp_path)
    calls = {"n": 0}
    original = store._refresh

    def flaky_refresh():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("surprise")  # e.g. a bug or an OS error outside the guarded registry calls
        return original()

    monkeypatch.setattr(store, "_refresh", flaky_refresh)
    store.start_watching()
    try:
        wait_until(lambda: store.model is not None, 15, "the watcher to load after two failed checks")
        registry.add("2", fit(2))
        store.nudge_all_workers()
        wait_until(lambda: store.model.version == "2", 15, "the watcher to follow the alias to v2")
        assert calls["n"] >= 3
    finally:
        store.stop()
