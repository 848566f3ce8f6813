"""Generates the Grafana dashboards of the ML stack (JSON provisioned from monitoring/grafana/provisioning/).

    python monitoring/grafana/generate_dashboards.py           # (re)write the JSON files
    python monitoring/grafana/generate_dashboards.py --check   # exit 1 when the committed JSON is stale

The JSON output is committed next to the provisioning file; edit this script, never the JSON. Every panel
queries the provisioned Prometheus data source by uid. monitoring/tests/test_dashboards.py checks the
structure; tests/e2e/test_monitoring_live.py runs every panel query against a live Prometheus scraping the
real apps and fails when one returns nothing. monitoring/README.md describes every panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE_UID = "prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
OUTPUT_DIR = Path(__file__).resolve().parent / "provisioning" / "dashboards" / "mlstack"
GRID_WIDTH = 24
RATE = "$__rate_interval"  # Grafana picks a window of at least four scrape intervals
SCHEMA_VERSION = 39


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel, and how its series are named in the legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel before layout: kind is a Grafana panel type (timeseries or stat)."""

    title: str
    description: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[str, float], ...] = ()  # (colour, from value) after the base green
    extra_defaults: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (title, URL) shown in the panel's menu


def ts(title: str, description: str, *targets: Target, **kwargs: Any) -> Panel:
    """A time series panel."""
    return Panel(title, description, targets, kind="timeseries", **kwargs)


def stat(title: str, description: str, *targets: Target, **kwargs: Any) -> Panel:
    """A stat panel (the last value of each series)."""
    return Panel(title, description, targets, kind="stat", **kwargs)


def _thresholds(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for colour, value in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def _render(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": t.expr, "legendFormat": t.legend or "__auto",
         "range": True, "instant": False}
        for i, t in enumerate(panel.targets)
    ]
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel), **panel.extra_defaults}
    if panel.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False}
        if panel.thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
            "textMode": "value_and_name" if any(t.legend for t in panel.targets) else "auto",
        }
    rendered = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }
    if panel.links:
        rendered["links"] = [{"title": title, "url": url, "targetBlank": True} for title, url in panel.links]
    return rendered


def dashboard(uid: str, title: str, description: str, rows: list[tuple[str, list[Panel]]], *,
              variables: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A dashboard: each row is a Grafana row panel followed by its panels, laid out left to right."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in rows:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}})
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row_panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_render(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mlstack"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [{"title": "ML stack", "type": "dashboards", "tags": ["mlstack"], "asDropdown": True}],
        "panels": panels,
    }


# Traces (README: Traces): where the person's browser reaches Jaeger's UI (compose publishes it on JAEGER_PORT);
# a dashboard variable, so another address is typed in once, not edited in every link.
JAEGER_VARIABLE = {"name": "jaeger", "label": "Jaeger UI", "type": "textbox", "query": "http://localhost:16686",
                   "current": {"text": "http://localhost:16686", "value": "http://localhost:16686"}, "hide": 0}


def trace_link(service: str, operation: str) -> tuple[str, str]:
    """A panel link to Jaeger's search for the service's spans of this operation in the panel's time range."""
    from urllib.parse import quote

    # Grafana fills ${__from}/${__to} with the range in epoch milliseconds; Jaeger's search takes microseconds.
    url = (f"${{jaeger}}/search?service={service}&operation={quote(operation, safe='')}&lookback=custom"
           "&start=${__from}000&end=${__to}000&limit=20")
    return f"Traces: {service} {operation} (Jaeger)", url


# --------------------------------------------------------------------------- the dashboards

SERVING_REQUESTS = 'http_requests_total{service="serving"}'
SERVING_BUCKETS = f'rate(http_request_duration_seconds_bucket{{service="serving", route!="<unmatched>"}}[{RATE}])'


def serving_dashboard() -> dict[str, Any]:
    """Traffic, latency, errors, predictions and the model each worker serves."""
    return dashboard(
        "mlstack-serving", "ML stack / Serving",
        "Online predictions: traffic, latency percentiles, errors, predictions stored, model version per worker.",
        [
            ("Traffic", [
                ts("Requests per second by route",
                   "Requests per second by route template (unknown paths share <unmatched>); probes excluded.",
                   Target(f"sum by (route) (rate({SERVING_REQUESTS}[{RATE}]))", "{{route}}"), unit="reqps"),
                ts("Responses per second by status", "Responses per second by HTTP status code.",
                   Target(f"sum by (status) (rate({SERVING_REQUESTS}[{RATE}]))", "{{status}}"),
                   unit="reqps", width=8),
                stat("Requests in flight", "Requests being served right now, summed over the workers.",
                     Target('sum(http_requests_in_progress{service="serving"})'), width=4),
            ]),
            ("Latency", [
                ts("Latency percentiles", "p50, p90 and p99 request latency over every known route.",
                   *(Target(f"histogram_quantile({q}, sum by (le) ({SERVING_BUCKETS}))", f"p{round(q * 100)}")
                     for q in (0.5, 0.9, 0.99)),
                   unit="s", links=(trace_link("serving", "POST /predict"),)),
                ts("p99 latency by route", "99th percentile latency per route; /predict is the one to watch.",
                   Target(f"histogram_quantile(0.99, sum by (route, le) ({SERVING_BUCKETS}))", "{{route}}"),
                   unit="s", thresholds=(("red", 1.0),), links=(trace_link("serving", "POST /predict"),)),
            ]),
            ("Errors", [
                ts("5xx ratio", "Share of requests answered with a 5xx status (0 when there are none); the "
                   "ServingHigh5xxRatio alert fires above 5 %.",
                   # "or ... * 0" gives services without any 5xx a 0 instead of no data.
                   Target(f'(sum by (service) (rate(http_requests_total{{service="serving", status=~"5.."}}[{RATE}]))'
                          f" or sum by (service) (rate({SERVING_REQUESTS}[{RATE}])) * 0)"
                          f" / sum by (service) (rate({SERVING_REQUESTS}[{RATE}]))", "5xx ratio"),
                   unit="percentunit", thresholds=(("red", 0.05),)),
                ts("Errors by route and status", "4xx and 5xx responses per second by route and status.",
                   Target(f'sum by (route, status) (rate(http_requests_total{{service="serving", status=~"4..|5.."}}'
                          f"[{RATE}]))", "{{route}} {{status}}"), unit="reqps"),
            ]),
            ("Predictions", [
                ts("Rows predicted per second", "Rows predicted, single and batch requests.",
                   Target(f"sum(rate(serving_predictions_total[{RATE}]))", "rows/s"), width=8),
                ts("Predictions stored and dropped", "Predictions written to MongoDB per second, and predictions "
                   "dropped because the write buffer overflowed while MongoDB was down.",
                   Target(f"sum(rate(serving_predictions_stored_total[{RATE}]))", "stored/s"),
                   Target(f"sum(rate(serving_predictions_dropped_total[{RATE}]))", "dropped/s"), width=8),
                ts("Predictions waiting to be stored", "Rows in the workers' write buffers (grows while MongoDB is "
                   "down, then drains).",
                   Target("sum(serving_prediction_buffer_rows)", "buffered rows"), width=8),
            ]),
            ("Model", [
                stat("Model version per worker", "Registry version each Gunicorn worker serves (0: none loaded). "
                     "All workers should agree within seconds of a promotion.",
                     Target("serving_model_version", "{{instance}} pid {{pid}}"), width=8),
                ts("Time since model load per worker", "Seconds since each worker loaded the model it serves.",
                   Target("time() - serving_model_loaded_timestamp_seconds", "{{instance}} pid {{pid}}"),
                   unit="s", width=8),
                ts("Model loads (last hour)", "Successful and failed model loads in the last hour, all workers.",
                   Target("sum by (outcome) (increase(serving_model_loads_total[1h]))", "{{outcome}}"), width=8),
            ]),
        ],
        variables=(JAEGER_VARIABLE,),
    )


def pipeline_dashboard() -> dict[str, Any]:
    """ETL and training runs, failures, durations, rows, training data and promotions."""
    return dashboard(
        "mlstack-pipeline", "ML stack / Pipeline",
        "Scheduled and manual ETL and training runs: outcomes, durations, rows moved, training data, promotions.",
        [
            ("Job runs", [
                ts("Runs per hour by outcome", "ETL and training runs in the last hour, by outcome.",
                   Target("sum by (service, outcome) (increase(job_runs_total[1h]))", "{{service}} {{outcome}}")),
                stat("Failed runs (last 24 h)", "Failed runs per service in the last 24 hours.",
                     Target('sum by (service) (increase(job_runs_total{outcome="failure"}[24h]))', "{{service}}"),
                     width=6, thresholds=(("red", 1),), extra_defaults={"decimals": 0}),
                stat("Time since last successful run", "Seconds since the last run that succeeded, per service.",
                     Target("time() - max by (service) (job_last_success_timestamp_seconds)", "{{service}}"),
                     unit="s", width=6),
            ]),
            ("Durations", [
                ts("Last run duration", "Duration of the last run, failed or not.",
                   Target("max by (service) (job_last_duration_seconds)", "{{service}}"), unit="s",
                   links=(trace_link("etl", "etl run"), trace_link("training", "training run"))),
                ts("Run duration p90 (last hour)", "90th percentile run duration over the last hour.",
                   Target("histogram_quantile(0.9, sum by (service, le) (rate(job_duration_seconds_bucket[1h])))",
                          "{{service}}"), unit="s"),
            ]),
            ("Rows", [
                ts("ETL rows per hour", "Rows ingested (by source), predicted by serving, and backfilled (rows of "
                   "earlier runs that serving had missed), in the last hour.",
                   Target("sum by (source) (increase(etl_rows_ingested_total[1h]))", "ingested ({{source}})"),
                   Target("sum(increase(etl_rows_predicted_total[1h]))", "predicted"),
                   Target("sum(increase(etl_rows_backfilled_total[1h]))", "backfilled")),
                ts("Failed calls to serving (per hour)", "ETL batches serving could not predict; their rows stay "
                   "pending and are backfilled by a later run.",
                   Target("sum(increase(etl_forward_failures_total[1h]))", "failed calls"), width=6),
                ts("Rows stored", "Rows in the rows collection, and how many still wait for a prediction.",
                   Target("max by (status) (data_rows_stored)", "{{status}}"), width=6),
            ]),
            ("Training", [
                ts("Training data rows", "Rows the last training run used, by source (MongoDB, or generated "
                   "rows when MongoDB had too few).",
                   Target("max by (source) (training_data_rows)", "{{source}}"), width=8),
                stat("Promotion decisions (last 24 h)", "Challengers promoted or rejected, and manual rollbacks.",
                     Target("sum by (outcome) (increase(training_promotions_total[24h]))", "{{outcome}}"),
                     width=8, extra_defaults={"decimals": 0}),
                ts("Registry housekeeping (last 24 h)", "Versions deleted by retention, deletions that failed, "
                   "reload calls to serving that failed, runs that fell back to generated data.",
                   Target("sum(increase(training_model_versions_deleted_total[24h]))", "versions deleted"),
                   Target("sum(increase(training_retention_failures_total[24h]))", "retention failures"),
                   Target("sum(increase(training_serving_nudge_failures_total[24h]))", "serving nudge failures"),
                   Target("sum(increase(training_data_fallbacks_total[24h]))", "generated-data fallbacks"),
                   width=8),
            ]),
        ],
        variables=(JAEGER_VARIABLE,),
    )


def model_quality_dashboard() -> dict[str, Any]:
    """Champion vs challenger metrics, live MAE and input drift per feature."""
    metric = 'max by (role) (training_model_metric{{metric="{}"}})'
    return dashboard(
        "mlstack-model-quality", "ML stack / Model quality",
        "Is the model still good: holdout metrics of the champion and the last challenger, live MAE on rows "
        "with known quality, and input drift per feature against the champion's training rows.",
        [
            ("Champion and challenger (holdout of the last training run)", [
                ts("MAE", "Mean absolute error of the champion and of the last challenger (lower is better).",
                   Target(metric.format("mae"), "{{role}}"), width=8),
                ts("RMSE", "Root mean squared error of the champion and of the last challenger (lower is better).",
                   Target(metric.format("rmse"), "{{role}}"), width=8),
                ts("R²", "Coefficient of determination of the champion and of the last challenger (higher is better).",
                   Target(metric.format("r2"), "{{role}}"), width=8),
            ]),
            ("Live quality", [
                ts("Live MAE vs champion holdout MAE", "MAE of recent predictions of ETL rows with known quality, "
                   "next to the champion's holdout MAE; the LiveMaeDegraded alert fires at 1.5 times.",
                   Target("max(serving_live_mae)", "live MAE"),
                   Target('max(training_model_metric{role="champion", metric="mae"})', "champion holdout MAE")),
                ts("Rows behind the live figures", "Labelled rows in the live MAE, and predicted rows in the drift "
                   "window.",
                   Target("max(serving_live_mae_rows)", "live MAE rows"),
                   Target("max(serving_drift_window_rows)", "drift window rows"), width=6),
                ts("Mean predicted quality", "Mean prediction over the drift window (prediction drift).",
                   Target("max(serving_prediction_mean)", "mean prediction"), width=6),
            ]),
            ("Input drift (recent predicted inputs vs the champion's training rows)", [
                ts("PSI per feature", "Population stability index per feature: < 0.1 stable, 0.1-0.25 moderate, "
                   "> 0.25 significant (FeatureDriftHigh alert).",
                   Target("max by (feature) (serving_feature_drift_psi)", "{{feature}}"),
                   thresholds=(("yellow", 0.1), ("red", 0.25))),
                ts("KS statistic per feature", "Largest gap between the cumulative distributions, per feature.",
                   Target("max by (feature) (serving_feature_drift_ks)", "{{feature}}")),
                stat("Drift reference version", "Model version whose training rows drift is measured against "
                     "(0: the served version has no reference).",
                     Target("max(serving_drift_reference_version)", "reference version"), width=6),
                stat("Champion version served", "Highest model version any serving worker serves.",
                     Target("max(serving_model_version)", "served version"), width=6),
                stat("Seconds since last quality pass", "Age of the drift, live MAE and data size figures.",
                     Target("time() - max(serving_monitor_last_run_timestamp_seconds)", "age"), unit="s", width=6),
                stat("Failed quality passes (last 24 h)", "Quality monitor passes that failed (MongoDB down).",
                     Target("sum(increase(serving_monitor_failures_total[24h]))", "failed passes"), width=6,
                     thresholds=(("red", 1),), extra_defaults={"decimals": 0}),
            ]),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard by file name."""
    return {
        "serving.json": serving_dashboard(),
        "pipeline.json": pipeline_dashboard(),
        "model-quality.json": model_quality_dashboard(),
    }


def render(board: dict[str, Any]) -> str:
    """The JSON text of a dashboard as committed."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with --check report the ones whose committed JSON differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when a file is stale")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    stale = []
    for name, board in dashboards().items():
        path = args.out / name
        text = render(board)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("stale, run monitoring/grafana/generate_dashboards.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
