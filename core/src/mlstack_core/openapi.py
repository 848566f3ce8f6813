"""Each service's API contract: ``GET /openapi.json`` (OpenAPI 3.1, generated from the app's routes) and
``GET /docs`` (Swagger UI 5, its assets served from the installed flask-swagger-ui package, no CDN).

spectree builds the document from ``app.url_map`` (greedy mode: every registered rule is listed, decorated
or not) and from the pydantic models that :func:`document` attaches to a view. :func:`document` always uses
``skip_validation`` and returns the view unwrapped: our own validation (numpy on the hot path, pydantic in the
job routes) stays the one that answers, with the service's JSON error shape. What no decorator says is added
here, in one place: the error shape on every 4XX/5XX, the two security schemes on the operations that check a token, and
``deprecated`` on the original template's aliases.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, Literal

from flask import Flask, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic import BaseModel, Field
from spectree import Response, SpecTree

DOCS_PATH = "/docs"
SPEC_PATH = "/openapi.json"
OPENAPI_VERSION = "3.1.0"

# Set by mlstack_core.auth on the views it guards; read here to attach the security scheme.
ADMIN_ATTR = "_mlstack_admin_only"
SERVICE_TOKEN_ATTR = "_mlstack_service_token"  # noqa: S105 - an attribute name, not a secret
# Blueprints holding the original template's paths end with this; job_routes marks its aliases by defaults.
LEGACY_BLUEPRINT_SUFFIX = "_legacy"

# spectree skips rules whose endpoint starts with "openapi" and paths under /<path>: our own doc routes.
_spec = SpecTree(
    "flask", mode="greedy", path=DOCS_PATH.strip("/"), page_templates={}, annotations=False,
    openapi_version=OPENAPI_VERSION,
)


class ErrorBody(BaseModel):
    """The one JSON error shape of every 4xx/5xx answer (mlstack_core.errors)."""

    error_code: str = Field(description="stable UPPER_SNAKE code", examples=["INVALID_ROWS"])
    message: str = Field(description="what went wrong and what to do", examples=["1 of 2 rows are invalid; ..."])
    details: Any = Field(None, description="per-row or per-field problems, when there are any")
    request_id: str | None = Field(None, description="the X-Request-ID of this request, to find its log lines")


SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http", "scheme": "bearer",
        "description": "ADMIN_TOKEN as 'Authorization: Bearer <token>' (or 'X-Admin-Token: <token>'); "
                       "401 AUTH_REQUIRED without it, 403 AUTH_INVALID with another token.",
    },
    "adminTokenHeader": {"type": "apiKey", "in": "header", "name": "X-Admin-Token",
                         "description": "ADMIN_TOKEN in the X-Admin-Token header."},
    "serviceToken": {
        "type": "http", "scheme": "bearer",
        "description": "SERVICE_TOKEN (the ETL's role) as 'Authorization: Bearer <token>': required to send row "
                       "ids to /predict; quality is kept only from it.",
    },
}


def document(
    *, query: type[BaseModel] | None = None, json: type[BaseModel] | None = None,
    headers: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | None] | None = None, tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Describe a view's query, headers, JSON body and responses in the document; never validates anything."""
    resp = Response(**{f"HTTP_{status}": model for status, model in (responses or {}).items()}) if responses else None

    def attach(view: Callable[..., Any]) -> Callable[..., Any]:
        # spectree keeps what a view documents in a per-function table; its wrapper would run on every request
        # (hooks, response handling) even with skip_validation. Keep the metadata, return the view unwrapped,
        # so documenting a route costs it nothing (bench/openapi_validation.py; the unit tests would catch a
        # spectree release that stores it elsewhere: the bodies would vanish from the document).
        wrapper = _spec.validate(
            query=query, json=json, headers=headers, resp=resp, tags=tags, skip_validation=True
        )(view)
        _spec._function_metadata[view] = _spec.get_function_metadata(wrapper)
        return view

    return attach


def _flag(view: Callable[..., Any], attr: str) -> bool:
    while view is not None:
        if getattr(view, attr, False):
            return True
        view = getattr(view, "__wrapped__", None)
    return False


_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path template (``/jobs/<job>`` -> ``/jobs/{job}``)."""
    return _RULE_ARG.sub(r"{\1}", rule)


def is_legacy(rule: Any) -> bool:
    """True for the original template's aliases (the routes of a service's legacy blueprint)."""
    return rule.endpoint.split(".")[0].endswith(LEGACY_BLUEPRINT_SUFFIX)


def build_document(app: Flask, *, title: str, version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of this app's registered routes."""
    # A fresh build per app: one process may hold several apps (tests). spectree builds its document once
    # (.spec caches it, and building moves nested $defs out of its models), so build from a copy of them.
    models = copy.deepcopy(_spec.models)
    try:
        with app.app_context():
            doc = _spec._generate_spec()
    finally:
        _spec.models = models
    doc["info"] = {"title": title, "version": version,
                   "description": "Errors are JSON: {error_code, message, details?, request_id}."}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    doc["components"]["securitySchemes"] = SECURITY_SCHEMES
    doc.pop("security", None)
    error = {"description": "JSON error", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for rule in app.url_map.iter_rules():
        operations = doc["paths"].get(openapi_path(rule.rule), {})
        view = app.view_functions[rule.endpoint]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = operations.get(method.lower())
            if operation is None:
                continue
            operation["operationId"] = f"{method.lower()}_{rule.endpoint.replace('.', '_')}_{_slug(rule.rule)}"
            responses = operation.setdefault("responses", {})
            if not any(status.startswith("2") for status in responses):
                responses["200"] = {"description": "OK"}
            if _is_spectree_422(responses.get("422")):
                del responses["422"]
            responses["4XX"] = error
            responses["5XX"] = error
            if _flag(view, ADMIN_ATTR):
                operation["security"] = [{"adminToken": []}, {"adminTokenHeader": []}]
            elif _flag(view, SERVICE_TOKEN_ATTR):
                # Optional: anonymous callers may predict; ids need the service token.
                operation["security"] = [{}, {"serviceToken": []}]
            if is_legacy(rule):
                operation["deprecated"] = True
                operation["description"] = ("Original template alias, kept for its clients. "
                                            + operation.get("description", "")).strip()
    # Keep the schemas this app's operations use: models of other services' views (imported in the same
    # process) and spectree's ValidationError (never answered: skip_validation) are left out.
    doc["components"]["schemas"] = _reachable(doc, schemas)
    return doc


def _reachable(doc: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    keep: dict[str, Any] = {}
    todo = [doc["paths"]]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] not in keep:
                name = ref[len(prefix):]
                keep[name] = schemas[name]
                todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return dict(sorted(keep.items()))


def _is_spectree_422(response: dict[str, Any] | None) -> bool:
    return bool(response) and "ValidationError" in str(response)


def _slug(rule: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", rule).strip("_") or "root"


def install_openapi(app: Flask, *, title: str) -> None:
    """Serve /openapi.json and Swagger UI at /docs (assets from the flask-swagger-ui package)."""

    @app.get(SPEC_PATH, endpoint="openapi_json")
    def openapi_json():
        """This service's OpenAPI 3.1 document."""
        doc = current_app.extensions.get("openapi_document")
        if doc is None:  # routes are all registered by the first request: build once per process
            doc = current_app.extensions["openapi_document"] = build_document(current_app, title=title)
        return jsonify(doc)

    app.register_blueprint(get_swaggerui_blueprint(
        DOCS_PATH, SPEC_PATH, config={"app_name": title}, blueprint_name="openapi_docs",
    ))


def service_token_optional(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view that takes the SERVICE_TOKEN for some of its input (row ids) but answers anonymous callers."""
    setattr(view, SERVICE_TOKEN_ATTR, True)
    return view


class RowsQuery(BaseModel):
    """``?n=``: how many of the newest rows."""

    n: int | None = Field(None, ge=1, le=1000, description="how many rows (ASCII digits)", examples=[10])


class WaitQuery(BaseModel):
    """``?wait=``: seconds to wait for the run to finish before answering."""

    wait: float | None = Field(None, ge=0, le=20, description="seconds, at most 20", examples=[5])


class IndexAnswer(BaseModel):
    """``GET /``: which service this is and its endpoints (each service adds its own fields)."""

    service: str = Field(examples=["serving"])
    endpoints: dict[str, str] = Field(description="'METHOD path' -> what it does")


class HealthAnswer(BaseModel):
    """``GET /health``: the process answers."""

    status: Literal["ok"]
    service: str


class ReadyCheck(BaseModel):
    """One dependency's check: ``detail`` is a word (ok, loaded, unreachable, timeout, failed...), no host."""

    ok: bool
    detail: str


class ReadyAnswer(BaseModel):
    """``GET /ready``: 200 when every check passes, 503 with the same shape when one fails."""

    ready: bool
    checks: dict[str, ReadyCheck] = Field(examples=[{"mongodb": {"ok": True, "detail": "ok"}}])
