"""Writes postman/mlstack.postman_collection.json from the three services' OpenAPI documents.

Each service's app is built here with offline settings (nothing is contacted, no server runs) and its
``GET /openapi.json`` read through Flask's test client. openapi-to-postmanv2 (npm, pinned in scripts/install.sh)
converts each document (scripts/lib/openapi2postman.js); this script merges the three collections into one with a
folder per service and adds what a newman run needs:

- base URLs ``{{serving_url}}``, ``{{etl_url}}``, ``{{training_url}}``; bearer ``{{admin_token}}`` on every
  operation whose security requires the admin token, every other operation sent without a token (``/predict``'s
  optional service token is the ETL's: its anonymous predictions are what a Postman user sends);
- path variables: ``job`` is the service's one job, an id named in another operation's answer schema (``run_id``)
  is taken from that answer (``{{run_id}}``);
- a test script for the whole collection (no 5xx; the answer is JSON, or Prometheus text) and one per request:
  the status is one the document lists for it (its 2xx unless ``EXPECTED`` says otherwise), and the body matches
  the document's schema for that status;
- a fixed order per folder: anonymous operations, then the admin ones (by path: pause before resume), then the
  ones that need an id from an earlier answer.

Run ``.venv/bin/python scripts/postman.py`` after changing an endpoint; ``--check`` exits 1 when the committed
file differs from what the current documents give (tests/e2e/test_postman_newman.py runs it).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import itertools
import json
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "postman" / "mlstack.postman_collection.json"
CONVERTER = REPO / ".tools" / "node" / "node_modules" / "openapi-to-postmanv2"
WRAPPER = REPO / "scripts" / "lib" / "openapi2postman.js"

# Folder: the app factory's module and the settings that keep it offline (no scheduler, watcher or seeding).
SERVICES: dict[str, tuple[str, dict[str, Any]]] = {
    "serving": ("serving.app", {"model_watch": False, "store_predictions": False, "seed_rows": 0,
                                "monitor_enabled": False}),
    "etl": ("etl.app", {"scheduler_enabled": False}),
    "training": ("training.app", {"scheduler_enabled": False}),
}
# The converter's options: examples rather than faked values; its folders (one per path segment) are flattened.
OPTIONS = {"parametersResolution": "Example", "requestNameSource": "Fallback", "folderStrategy": "Paths",
           "includeAuthInfoInExample": False, "enableOptionalParameters": True}
# Statuses other than the documented 2xx that a fresh stack answers, and why. Each must be in the document.
EXPECTED: dict[tuple[str, str, str], tuple[str, ...]] = {
    # 409 NO_PREVIOUS_CHAMPION, or TRAINING_IN_PROGRESS while a run of this collection trains; 200 once one
    # of them has promoted a second version.
    ("training", "POST", "/model/rollback"): ("200", "4XX"),
}
# Answers that are not JSON though their Content-Type says so, and why: left out of the collection's JSON check.
NOT_JSON: dict[tuple[str, str, str], str] = {
    ("serving", "GET", "/ping"): "MLflow's scoring server answers '\\n' as application/json; so do we",
    ("serving", "GET", "/version"): "MLflow's scoring server answers its bare version as application/json",
}
ADMIN_SCHEME = "adminToken"
ADMIN_AUTH = {"type": "bearer", "bearer": [{"key": "token", "value": "{{admin_token}}", "type": "string"}]}
# JSON Schema keywords kept in the per-request schema checks (Postman's sandbox validates with ajv, draft-07);
# OpenAPI's own (discriminator, example) and annotations are left out.
SCHEMA_KEYWORDS = {"type", "properties", "required", "items", "anyOf", "oneOf", "allOf", "enum", "const",
                   "additionalProperties", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
                   "pattern"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")



def collection_test(error_schema: dict[str, Any], not_json: list[str]) -> list[str]:
    """The script newman runs after every request."""
    return [
        "// Every request (scripts/postman.py): no 5xx; the answer is JSON (an error: the documented error shape)",
        "// or Prometheus' text exposition; NOT_JSON in scripts/postman.py says why some are neither.",
        "pm.test('no 5xx', function () {",
        "    pm.expect(pm.response.code, pm.response.text().slice(0, 300)).to.be.below(500);",
        "});",
        "const type = pm.response.headers.get('Content-Type') || '';",
        "// Not JSON under a JSON Content-Type, as MLflow's scoring server answers them.",
        f"const notJson = {json.dumps(sorted(not_json))};",
        "if (/^text\\/plain; version=/.test(type)) {",
        "    pm.test('the answer is Prometheus text', function () {",
        "        pm.expect(pm.response.text()).to.match(/^# (HELP|TYPE) /m);",
        "    });",
        "} else if (!notJson.includes(pm.info.requestName)) {",
        "    pm.test('the answer is JSON', function () {",
        "        pm.expect(type).to.match(/^application\\/json/);",
        "        pm.response.json();",
        "    });",
        "}",
        "if (pm.response.code >= 400) {",
        "    pm.test('the error is the documented error shape', function () {",
        f"        pm.response.to.have.jsonSchema({json.dumps(error_schema, sort_keys=True)});",
        "    });",
        "}",
    ]


def documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, as its app serves it, from apps built offline in this process."""
    docs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder, (module, extra) in SERVICES.items():
            settings = {
                "admin_token": secrets.token_urlsafe(32), "service_token": secrets.token_urlsafe(32),
                "mongo_uri": "mongodb://127.0.0.1:1/", "mongo_timeout_ms": 200, "log_level": "WARNING",
                "state_dir": Path(tmp) / folder / "state", "log_dir": Path(tmp) / folder / "logs",
            } | extra
            app = importlib.import_module(module).create_app(settings)
            response = app.test_client().get("/openapi.json")
            if response.status_code != 200:
                raise SystemExit(f"{folder}: GET /openapi.json answered {response.status_code}")
            docs[folder] = {"doc": response.get_json(), "job": _job_name(app)}
    return docs


def _job_name(app: Any) -> str | None:
    service = app.extensions.get("job_service")
    return service.job.name if service else None


def for_converter(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with OpenAPI 3.0's ``example`` beside each 3.1 ``examples`` list: the converter reads only
    ``example``, and for parameters drops what stands beside a nullable ``anyOf``, so it is copied up to them."""
    doc = copy.deepcopy(doc)
    todo: list[Any] = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("examples"), list) and node["examples"] and "example" not in node:
                node["example"] = node["examples"][0]
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    for operations in doc["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if "example" in parameter.get("schema", {}):
                    parameter.setdefault("example", parameter["schema"]["example"])
    return doc


def convert(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each document converted by openapi-to-postmanv2 (one node process for all)."""
    if not CONVERTER.is_dir():
        raise SystemExit(f"openapi-to-postmanv2 is not installed in {CONVERTER.parent}: run scripts/install.sh")
    result = subprocess.run(
        ["node", str(WRAPPER), str(CONVERTER), json.dumps(OPTIONS)],
        input=json.dumps({name: for_converter(doc) for name, doc in docs.items()}),
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"openapi-to-postmanv2 failed:\n{result.stderr}")
    return json.loads(result.stdout)


def _requests(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The converter's requests, out of its folders (one per path segment)."""
    found = []
    for item in items:
        if "request" in item:
            found.append(item)
        found.extend(_requests(item.get("item", [])))
    return found


def _path(url: dict[str, Any]) -> str:
    segments = [f"{{{s[1:]}}}" if s.startswith(":") else s for s in url.get("path", [])]
    return "/" + "/".join(segments)


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    """A response schema with its $refs replaced by the components and only JSON Schema keywords kept."""
    if isinstance(schema, list):
        return [_inline(s, components) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _inline(components[schema["$ref"].rsplit("/", 1)[1]], components)
    kept = {}
    for key, value in schema.items():
        if key == "properties":
            kept[key] = {name: _inline(s, components) for name, s in value.items()}
        elif key in SCHEMA_KEYWORDS:
            kept[key] = _inline(value, components)
    return kept


def _schemas(operation: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Documented 2xx status -> JSON schema of its answer, for those that give one (errors: collection_test)."""
    found = {}
    for status, response in operation["responses"].items():
        if not status.startswith("2"):
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            found[status] = _inline(schema, components)
    return found


def _strip_ids(node: Any) -> Any:
    """The converter's random item and response ids left out: Postman and newman do without them."""
    if isinstance(node, dict):
        return {k: _strip_ids(v) for k, v in node.items()
                if not (k in {"id", "_postman_id"} and isinstance(v, str) and _UUID.match(v))}
    if isinstance(node, list):
        return [_strip_ids(v) for v in node]
    return node


def _replace(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return node.replace(old, new) if isinstance(node, str) else node


def _test_script(name: str, expected: tuple[str, ...], schemas: dict[str, Any], captures: list[str]) -> list[str]:
    lines = [
        f"const expected = {json.dumps(list(expected))};",
        "const code = String(pm.response.code);",
        f"pm.test({json.dumps(name + ' answers ' + ' or '.join(expected))}, function () {{",
        "    pm.expect(expected, 'answered ' + code).to.include(expected.includes(code) ? code : code[0] + 'XX');",
        "});",
    ]
    if schemas:
        lines += [
            f"const schemas = {json.dumps(schemas, sort_keys=True)};",
            "const schema = schemas[code] || schemas[code[0] + 'XX'];",
            "if (schema) {",
            "    pm.test('the answer matches the documented schema of ' + code, function () {",
            "        pm.response.to.have.jsonSchema(schema);",
            "    });",
            "}",
        ]
    for key in captures:  # an id a later request of the collection puts in its path
        lines.append(f"if (code[0] === '2') {{ pm.collectionVariables.set({json.dumps(key)}, "
                     f"pm.response.json()[{json.dumps(key)}]); }}")
    return lines


def _folder(folder: str, info: dict[str, Any], collection: dict[str, Any]) -> list[dict[str, Any]]:
    """One service's requests, named, authorised, scripted and ordered."""
    doc = info["doc"]
    components = doc.get("components", {}).get("schemas", {})
    operations = {(m.upper(), p): op for p, ops in doc["paths"].items() for m, op in ops.items()}
    # Ids that an operation's path takes and another's answer schema gives (run_id: a run's answer, its status).
    path_ids = {p["name"] for op in operations.values() for p in op.get("parameters", []) if p["in"] == "path"}
    path_values = {"job": info["job"]}
    items, needed, given = {}, {}, set()
    for item in _requests(collection["item"]):
        request = item["request"]
        key = (request["method"], _path(request["url"]))
        if key not in operations or key in items:
            raise SystemExit(f"{folder}: the converter gave {key}, not one operation of the document")
        operation = operations[key]
        name = f"{key[0]} {key[1]}" + (" (original)" if operation.get("deprecated") else "")
        admin = any(ADMIN_SCHEME in s for s in operation.get("security", [])[:1])
        request["auth"] = ADMIN_AUTH if admin else {"type": "noauth"}
        needs = []
        for variable in request["url"].get("variable", []):
            if variable["key"] in path_values:
                variable["value"] = path_values[variable["key"]]
            else:
                variable["value"] = "{{" + variable["key"] + "}}"
                needs.append(variable["key"])
        status_codes = [s for s in operation["responses"] if s.startswith("2")]
        expected = EXPECTED.get((folder, *key), tuple(status_codes))
        undocumented = [s for s in expected if s not in operation["responses"]]
        if undocumented:
            raise SystemExit(f"{folder} {name}: EXPECTED lists {undocumented}, not in the document")
        schemas = _schemas(operation, components)
        captures = sorted(k for k in path_ids if any(k in s.get("properties", {}) for s in schemas.values()))
        given |= set(captures)
        needed[key] = set(needs)
        item["name"] = request["name"] = name  # the converter's name is the summary: it becomes the description
        text = "\n\n".join(t for t in (operation.get("summary"), operation.get("description")) if t)
        request["description"] = {"content": text, "type": "text/plain"}
        item["event"] = [{"listen": "test", "script": {
            "type": "text/javascript", "exec": _test_script(name, expected, schemas, captures)}}]
        phase = 2 if needs else 1 if admin else 0
        items[key] = (phase, key[1], key[0]), item
    missing = sorted(set(operations) - set(items))
    if missing:
        raise SystemExit(f"{folder}: the converter gave no request for {missing}")
    for (method, path), unknown in needed.items():
        if unknown - given:
            raise SystemExit(f"{folder} {method} {path}: no value for {sorted(unknown - given)} "
                             "(not the job, and no answer schema of the service names it)")
    ordered = [item for _, item in sorted(items.values(), key=lambda pair: pair[0])]
    return _replace(ordered, "{{baseUrl}}", "{{" + folder + "_url}}")


def build() -> dict[str, Any]:
    """The collection as a dict."""
    docs = documents()
    collections = convert({folder: info["doc"] for folder, info in docs.items()})
    folders, chained = [], set()
    for folder, info in docs.items():
        doc = info["doc"]
        items = _folder(folder, info, collections[folder])
        chained |= {v["value"][2:-2] for item in items for v in item["request"]["url"].get("variable", [])
                    if v["value"].startswith("{{")}
        folders.append({"name": folder, "description": f"{doc['info']['title']} {doc['info']['version']}: "
                        "generated from its GET /openapi.json", "item": items})
    names = [(folder["name"], item["name"]) for folder in folders for item in folder["item"]]
    not_json = [f"{method} {path}" for _, method, path in NOT_JSON]
    if any(sum(name == n for _, n in names) != 1 for name in not_json):
        raise SystemExit(f"each of NOT_JSON {not_json} must name one request of the collection")
    errors = {json.dumps(_inline({"$ref": "#/components/schemas/ErrorBody"}, info["doc"]["components"]["schemas"]))
              for info in docs.values()}
    if len(errors) != 1:
        raise SystemExit("the services document different error shapes: one collection test cannot check them")
    return _strip_ids({
        "info": {
            "name": "ML pipeline stack",
            "description": "Every operation of the three services' OpenAPI documents, converted by "
                           "openapi-to-postmanv2 (scripts/postman.py; do not edit by hand).",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "variable": [
            {"key": "serving_url", "value": "http://localhost:80"},
            {"key": "etl_url", "value": "http://localhost:5554"},
            {"key": "training_url", "value": "http://localhost:5555"},
            {"key": "admin_token", "value": ""},
            *({"key": key, "value": ""} for key in sorted(chained)),
        ],
        "event": [{"listen": "test", "script": {"type": "text/javascript",
                                                "exec": collection_test(json.loads(errors.pop()), not_json)}}],
        "item": folders,
    })


def render() -> str:
    """The collection file's text."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        committed = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if committed != text:
            diff = difflib.unified_diff(committed.splitlines(), text.splitlines(), "committed", "generated",
                                        lineterm="")
            sys.stderr.write(f"{OUT.relative_to(REPO)} is stale (the OpenAPI documents give another collection): "
                             "run .venv/bin/python scripts/postman.py and commit it. First differences:\n"
                             + "\n".join(itertools.islice(diff, 40)) + "\n")
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {OUT.relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
