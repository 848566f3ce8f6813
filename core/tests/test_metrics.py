"""Request and job metrics: bounded labels, counters that exist before the first event."""

from __future__ import annotations

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from mlstack_core import appkit, metrics


@pytest.fixture
def client():
    app = Flask(__name__)
    appkit.install_metrics(app, "metrics-test")

    @app.route("/items/<item_id>", methods=["GET", "POST"])
    def item(item_id: str):
        return {"id": item_id}

    return app.test_client()


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_routes_are_labelled_by_template_and_unknown_paths_share_one_label(client):
    for i in range(20):
        client.get(f"/items/{i}")
        client.get(f"/nowhere/{i}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "nowhere" not in text and "/items/1" not in text
    assert sample("http_requests_total", service="metrics-test", route="/items/<item_id>", method="GET",
                  status="200") == 20
    assert sample("http_requests_total", service="metrics-test", route="<unmatched>", method="GET",
                  status="404") == 20


@pytest.mark.parametrize("method", ["BREW", "PROPFIND", "M-SEARCH"])
def test_unknown_methods_share_one_label(client, method):
    before = sample("http_requests_total", service="metrics-test", route="<unmatched>", method="OTHER",
                    status="404") or 0
    client.open("/somewhere", method=method)
    assert sample("http_requests_total", service="metrics-test", route="<unmatched>", method="OTHER",
                  status="404") == before + 1
    assert sample("http_requests_total", service="metrics-test", route="<unmatched>", method=method,
                  status="404") is None


def test_probes_are_not_counted(client):
    client.get("/metrics")
    assert sample("http_requests_total", service="metrics-test", route="/metrics", method="GET",
                  status="200") is None


def test_declared_job_counters_start_at_zero():
    metrics.declare_job("declared-service", "nightly")
    for outcome in ("success", "failure"):
        assert sample("job_runs_total", service="declared-service", job_name="nightly", outcome=outcome) == 0


def test_record_job_run():
    metrics.record_job_run("recorded-service", "etl", duration=1.5, ok=False)
    assert sample("job_runs_total", service="recorded-service", job_name="etl", outcome="failure") == 1
    assert sample("job_last_duration_seconds", service="recorded-service", job_name="etl") == 1.5
    assert sample("job_last_success_timestamp_seconds", service="recorded-service", job_name="etl") is None
    metrics.record_job_run("recorded-service", "etl", duration=0.5, ok=True)
    assert sample("job_last_success_timestamp_seconds", service="recorded-service", job_name="etl") > 0
    assert sample("job_duration_seconds_count", service="recorded-service", job_name="etl") == 2
