"""Serving's OpenAPI document lists every route; /docs serves Swagger UI from local assets."""

from devstack.openapi_checks import admin_operations, check_docs_page, check_document


def test_document_is_openapi_31_and_lists_every_route(app, client):
    doc = check_document(app, client)
    assert {"POST /model/reload", "GET /loadModel/"} <= admin_operations(doc)
    assert "POST /predict" not in admin_operations(doc)
    assert {"serviceToken": []} in doc["paths"]["/predict"]["post"]["security"]


def test_docs_page_uses_only_local_assets(client):
    check_docs_page(client)
