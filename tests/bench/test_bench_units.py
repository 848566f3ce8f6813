"""Unit tests of bench helpers that need no servers: oha's JSON summary and the original template's apps."""

from __future__ import annotations

import pytest

from bench import original_apps
from bench.openloop import AccessLogWindow, parse


def test_parse_reads_percentiles_and_counts_errors():
    raw = {
        "summary": {"total": 5.0, "requestsPerSec": 99.8, "slowest": 0.25},
        "latencyPercentiles": {"p50": 0.002, "p99": 0.01, "p99.9": 0.05},
        "statusCodeDistribution": {"200": 490, "503": 3},
        "errorDistribution": {"connection closed": 2},
    }
    figures = parse(raw)
    assert figures["requests"] == 495
    assert figures["ok"] == 490
    assert figures["errors"] == 5
    assert (figures["p50_ms"], figures["p99_ms"], figures["p999_ms"], figures["max_ms"]) == (2.0, 10.0, 50.0, 250.0)


def test_access_log_window_reads_only_the_new_lines_and_splits_nginx_from_the_app(tmp_path):
    log = tmp_path / "access.log"
    old = '{"request_time": 9.000, "upstream_time": "9.000"}\n'
    log.write_text(old)
    window = AccessLogWindow(log).start()
    lines = [f'{{"request_time": {ms / 1000:.3f}, "upstream_time": "{ms / 1000:.3f}"}}' for ms in range(1, 100)]
    lines.append('{"request_time": 0.500, "upstream_time": "0.100, 0.300"}')  # Nginx tried two upstreams
    lines.append('{"request_time": 0.002, "upstream_time": "-"}')  # answered by Nginx itself
    with log.open("a") as out:
        out.write("\n".join(lines) + "\n")
    figures = window.timings()
    assert figures["nginx_requests"] == 101  # the line before start() is not counted
    assert figures["nginx_max_ms"] == 500.0 and figures["upstream_max_ms"] == 400.0
    assert figures["nginx_p50_ms"] == 50.0 and figures["upstream_p50_ms"] == 50.5
    assert figures["upstream_p99_ms"] < figures["upstream_max_ms"]


class _CountingModel:
    """A stand-in pyfunc: counts predict calls, answers a constant."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, frame):
        self.calls += 1
        assert len(frame) == 1
        return [5.5]


@pytest.fixture
def stub_model(monkeypatch):
    """The apps' model loader replaced by a counting stand-in."""
    model = _CountingModel()
    monkeypatch.setattr(original_apps, "_load_model", lambda: model)
    return model


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers and level after a test that reconfigures it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_faithful_app_predicts_twice_logs_and_counts(stub_model, root_logging, tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry

    log_file = tmp_path / "info.log"
    monkeypatch.setenv("ORIGINAL_LOG_FILE", str(log_file))
    registry = CollectorRegistry()
    client = original_apps.faithful_app(registry).test_client()
    response = client.post("/predictDummy/", json={"alcohol": 12.8, "pH": 3.3})
    assert response.status_code == 200
    assert response.get_json()["result"] == 5.5
    assert stub_model.calls == 2
    assert "PREDICT DUMMY DATA : 5.5" in log_file.read_text()
    labels = {"app_name": "serving", "method": "POST", "endpoint": "/predictDummy/", "http_status": "200"}
    assert registry.get_sample_value("request_count_total", labels) == 1
    assert registry.get_sample_value("request_prediction_dummy", {
        "app_name": "prediction dummy", "method": "POST", "endpoint": "/predictDummy/"}) == 5.5
    assert registry.get_sample_value("request_latency_count",
                                           {"app_name": "serving", "endpoint": "/predictDummy/"}) == 1


def test_light_app_predicts_once(stub_model):
    response = original_apps.light_app().test_client().post("/predictDummy/", json={"alcohol": 12.8})
    assert response.status_code == 200
    assert stub_model.calls == 1
