"""Checks every service's unit tests run on its OpenAPI document and /docs page (one copy, three callers)."""

from __future__ import annotations

import re
from typing import Any

import requests
from openapi_spec_validator import validate

from mlstack_core.openapi import is_legacy, openapi_path

_ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def documented_rules(app: Any, doc: dict[str, Any]) -> list[str]:
    """Every registered rule and method missing from the document (empty when all are there)."""
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = openapi_path(rule.rule)
        if rule.endpoint.startswith("openapi"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    return missing


def check_document(app: Any, client: Any) -> dict[str, Any]:
    """Assert /openapi.json is valid OpenAPI 3.1 listing every rule, aliases deprecated; returns it."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert documented_rules(app, doc) == []
    for rule in app.url_map.iter_rules():
        for method, operation in doc["paths"].get(openapi_path(rule.rule), {}).items():
            if method.upper() in rule.methods:
                assert operation.get("deprecated", False) == is_legacy(rule), (method, rule.rule)
                assert operation["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"}
    return doc


def admin_operations(doc: dict[str, Any]) -> set[str]:
    """'METHOD path' of the operations that require the admin token."""
    return {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m, op in ops.items()
            if {"adminToken": []} in op.get("security", [])}


def check_docs_page(client: Any) -> None:
    """Assert /docs is Swagger UI whose every script and stylesheet is local and answers 200."""
    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = _ASSET.findall(html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert "/openapi.json" in html
    for asset in assets:
        assert asset.startswith("/docs/"), asset  # no CDN, no other host
        assert client.get(asset).status_code == 200, asset


def check_live_contract(base_url: str, timeout: float = 30) -> None:
    """Assert a running service (through its Nginx) serves /openapi.json (3.1) and /docs with local assets."""
    doc = requests.get(f"{base_url}/openapi.json", timeout=timeout)
    assert doc.status_code == 200, (base_url, doc.text[:200])
    assert doc.json()["openapi"].startswith("3.1") and "/health" in doc.json()["paths"], base_url
    page = requests.get(f"{base_url}/docs", timeout=timeout)
    assert page.status_code == 200, (base_url, page.status_code)
    assets = _ASSET.findall(page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), base_url
    for asset in assets:
        assert asset.startswith("/docs/"), asset  # no CDN, no other host
        assert requests.get(f"{base_url}{asset}", timeout=timeout).status_code == 200, (base_url, asset)
