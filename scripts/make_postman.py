"""Writes postman/mlstack.postman_collection.json (Postman v2.1) from the compact list below.

One request per endpoint, old and new, each with a test on its status (and shape where it matters).
Run with newman against a running stack: scripts/newman.sh, or the e2e test that does it.
Regenerate after changing an endpoint: python scripts/make_postman.py (a test checks the file is current).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "postman" / "mlstack.postman_collection.json"

ROW = {
    "fixed acidity": 7.0, "volatile acidity": 0.27, "citric acid": 0.36, "residual sugar": 20.7,
    "chlorides": 0.045, "free sulfur dioxide": 45.0, "total sulfur dioxide": 170.0, "density": 1.001,
    "pH": 3.0, "sulphates": 0.45, "alcohol": 8.8,
}
CSV = '"' + '","'.join(ROW) + '","quality"\n' + ",".join(str(v) for v in ROW.values()) + ",6\n"
ADMIN = True

# (folder, name, method, base variable, path, body, admin, expected statuses, extra test lines)
REQUESTS: list[tuple] = [
    ("serving", "Service info", "GET", "serving_url", "/", None, False, [200], []),
    ("serving", "Health", "GET", "serving_url", "/health", None, False, [200], []),
    ("serving", "Ready", "GET", "serving_url", "/ready", None, False, [200], []),
    ("serving", "Predict one row", "POST", "serving_url", "/predict", ROW, False, [200],
     ["pm.expect(pm.response.json().model.version).to.be.a('string');"]),
    ("serving", "Predict a batch", "POST", "serving_url", "/predict", {"rows": [ROW, ROW]}, False, [200],
     ["pm.expect(pm.response.json().predictions.length).to.eql(2);"]),
    ("serving", "Predict dataframe_split", "POST", "serving_url", "/predict",
     {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}}, False, [200], []),
    ("serving", "Predict invalid row (422)", "POST", "serving_url", "/predict", ROW | {"pH": "acidic"}, False,
     [422], ["pm.expect(pm.response.json().error_code).to.eql('INVALID_ROWS');"]),
    ("serving", "predictDummy (original)", "POST", "serving_url", "/predictDummy/", ROW, False, [200],
     ["pm.expect(pm.response.json()).to.have.property('modelInfo');",
      "pm.expect(pm.response.json()).to.have.property('result');"]),
    ("serving", "Model info", "GET", "serving_url", "/model", None, False, [200], []),
    ("serving", "getModelInfo (original)", "GET", "serving_url", "/getModelInfo/", None, False, [200], []),
    ("serving", "Reload model", "POST", "serving_url", "/model/reload", None, ADMIN, [200], []),
    ("serving", "loadModel (original)", "GET", "serving_url", "/loadModel/", None, ADMIN, [200], []),
    ("serving", "loadModel without token (401)", "GET", "serving_url", "/loadModel/", None, False, [401], []),
    ("serving", "Latest rows", "GET", "serving_url", "/data/latest?n=5", None, False, [200], []),
    ("serving", "getLatestData (original)", "GET", "serving_url", "/getLatestData/", None, False, [200], []),
    ("serving", "Row count", "GET", "serving_url", "/data/count", None, False, [200], []),
    ("serving", "getLengthData (original)", "GET", "serving_url", "/getLengthData/", None, False, [200],
     ["pm.expect(pm.response.json().count).to.be.a('number');"]),
    ("serving", "predictTestMLFlow (original)", "GET", "serving_url", "/predictTestMLFlow/", None, False, [200], []),
    ("serving", "Metrics", "GET", "serving_url", "/metrics", None, False, [200], []),
    ("serving", "Unknown path (404 JSON)", "GET", "serving_url", "/no-such-page", None, False, [404],
     ["pm.expect(pm.response.json().error_code).to.eql('NOT_FOUND');"]),
    ("etl", "Service info", "GET", "etl_url", "/", None, False, [200], []),
    ("etl", "Health", "GET", "etl_url", "/health", None, False, [200], []),
    ("etl", "Ready", "GET", "etl_url", "/ready", None, False, [200], []),
    ("etl", "Ingest JSON rows", "POST", "etl_url", "/ingest", [ROW | {"quality": 6}], ADMIN, [201], []),
    ("etl", "Ingest CSV", "POST", "etl_url", "/ingest", CSV, ADMIN, [201], []),
    ("etl", "Ingest invalid rows (422)", "POST", "etl_url", "/ingest", [ROW | {"alcohol": -3}], ADMIN, [422], []),
    ("etl", "Get job", "GET", "etl_url", "/jobs/etl", None, False, [200], []),
    ("etl", "getEtlJob (original)", "GET", "etl_url", "/getEtlJob/", None, False, [200], []),
    ("etl", "Modify job", "PUT", "etl_url", "/jobs/etl", {"trigger": "interval", "minutes": 5}, ADMIN, [200], []),
    ("etl", "modifyEtlJob (original)", "POST", "etl_url", "/modifyEtlJob/", {"trigger": "interval", "minutes": 5},
     ADMIN, [200], []),
    ("etl", "modifyEtlJob with a callable (422)", "POST", "etl_url", "/modifyEtlJob/",
     {"func": "os:system", "args": ["touch /tmp/x"]}, ADMIN, [422], []),
    ("etl", "Pause job", "POST", "etl_url", "/jobs/etl/pause", None, ADMIN, [200], []),
    ("etl", "Resume job", "POST", "etl_url", "/jobs/etl/resume", None, ADMIN, [200], []),
    ("etl", "pauseEtlJob (original)", "GET", "etl_url", "/pauseEtlJob/", None, ADMIN, [200], []),
    ("etl", "resumeEtlJob (original)", "GET", "etl_url", "/resumeEtlJob/", None, ADMIN, [200], []),
    ("etl", "Run now and wait", "POST", "etl_url", "/jobs/etl/run?wait=20", None, ADMIN, [200, 202],
     ["pm.collectionVariables.set('etl_run_id', pm.response.json().run_id);"]),
    ("etl", "manualEtl (original)", "GET", "etl_url", "/manualEtl/", None, ADMIN, [200, 202], []),
    ("etl", "Run status", "GET", "etl_url", "/jobs/runs/{{etl_run_id}}", None, False, [200, 202], []),
    ("etl", "Metrics", "GET", "etl_url", "/metrics", None, False, [200], []),
    ("training", "Service info", "GET", "training_url", "/", None, False, [200], []),
    ("training", "Health", "GET", "training_url", "/health", None, False, [200], []),
    ("training", "Ready", "GET", "training_url", "/ready", None, False, [200], []),
    ("training", "Get job", "GET", "training_url", "/jobs/training", None, False, [200], []),
    ("training", "getTrainingJob (original)", "GET", "training_url", "/getTrainingJob/", None, False, [200], []),
    ("training", "Modify job", "PUT", "training_url", "/jobs/training", {"trigger": "interval", "hours": 1}, ADMIN,
     [200], []),
    ("training", "modifyTrainingJob (original)", "POST", "training_url", "/modifyTrainingJob/",
     {"trigger": "cron", "cron": "0 * * * *"}, ADMIN, [200], []),
    ("training", "pauseTrainingJob (original)", "GET", "training_url", "/pauseTrainingJob/", None, ADMIN, [200], []),
    ("training", "resumeTrainingJob (original)", "GET", "training_url", "/resumeTrainingJob/", None, ADMIN,
     [200], []),
    ("training", "Pause job", "POST", "training_url", "/jobs/training/pause", None, ADMIN, [200], []),
    ("training", "Resume job", "POST", "training_url", "/jobs/training/resume", None, ADMIN, [200], []),
    ("training", "Train now", "POST", "training_url", "/jobs/training/run", None, ADMIN, [202, 200],
     ["pm.collectionVariables.set('training_run_id', pm.response.json().run_id);"]),
    ("training", "manualTraining (original)", "GET", "training_url", "/manualTraining/", None, ADMIN, [202, 200],
     []),
    ("training", "Run status", "GET", "training_url", "/jobs/runs/{{training_run_id}}", None, False, [200, 202],
     []),
    ("training", "Promotion decisions", "GET", "training_url", "/promotions", None, False, [200], []),
    ("training", "Rollback", "POST", "training_url", "/model/rollback", None, ADMIN, [200, 409], []),
    ("training", "Metrics", "GET", "training_url", "/metrics", None, False, [200], []),
]


def _request(folder: str, name: str, method: str, base: str, path: str, body, admin: bool, statuses, extra):
    headers = [{"key": "Content-Type", "value": "text/csv" if isinstance(body, str) else "application/json"}]
    if admin:
        headers.append({"key": "Authorization", "value": "Bearer {{admin_token}}"})
    raw_path, _, query = path.partition("?")
    url = {
        "raw": "{{" + base + "}}" + path,
        "host": ["{{" + base + "}}"],
        "path": [p for p in raw_path.split("/") if p] + ([""] if raw_path.endswith("/") and raw_path != "/" else []),
    }
    if query:
        url["query"] = [{"key": k, "value": v} for k, v in (pair.split("=") for pair in query.split("&"))]
    item = {
        "name": name,
        "request": {"method": method, "header": headers if body is not None or admin else [], "url": url},
        "event": [{
            "listen": "test",
            "script": {"type": "text/javascript", "exec": [
                f"pm.test('{method} {path} answers {statuses}', function () {{",
                f"    pm.expect(pm.response.code).to.be.oneOf({json.dumps(statuses)});",
                "});",
                "pm.test('the answer is JSON or Prometheus text', function () {",
                "    const type = pm.response.headers.get('Content-Type') || '';",
                "    pm.expect(type).to.match(/application\\/json|text\\/plain/);",
                "});",
                *extra,
            ]},
        }],
    }
    if body is not None:
        raw = body if isinstance(body, str) else json.dumps(body, indent=2)
        item["request"]["body"] = {"mode": "raw", "raw": raw}
    return folder, item


def build() -> dict:
    """The collection as a dict."""
    folders: dict[str, list] = {}
    for spec in REQUESTS:
        folder, item = _request(*spec)
        folders.setdefault(folder, []).append(item)
    return {
        "info": {
            "name": "ML pipeline stack",
            "description": "Every endpoint of serving (80), ETL (5554) and training (5555), old and new.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "variable": [
            {"key": "serving_url", "value": "http://localhost:80"},
            {"key": "etl_url", "value": "http://localhost:5554"},
            {"key": "training_url", "value": "http://localhost:5555"},
            {"key": "admin_token", "value": ""},
            {"key": "etl_run_id", "value": ""},
            {"key": "training_run_id", "value": ""},
        ],
        "item": [{"name": name, "item": items} for name, items in folders.items()],
    }


def render() -> str:
    """The collection file's text."""
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != render():
            sys.stdout.write(f"{OUT} is stale: run python scripts/make_postman.py\n")
            sys.exit(1)
        sys.exit(0)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
