"""The ETL's OpenAPI document lists every route; /docs serves Swagger UI from local assets."""

from devstack.openapi_checks import admin_operations, check_docs_page, check_document


def test_document_is_openapi_31_and_lists_every_route(app, client):
    doc = check_document(app, client)
    assert {"POST /ingest", "PUT /jobs/{job}", "POST /jobs/{job}/run", "GET /manualEtl/"} <= admin_operations(doc)
    assert "GET /jobs/{job}" not in admin_operations(doc)
    assert "requestBody" in doc["paths"]["/jobs/{job}"]["put"]
    ingest = doc["paths"]["/ingest"]["post"]
    assert {(p["in"], p["name"]) for p in ingest["parameters"]} == {("header", "Idempotency-Key")}
    assert set(ingest["responses"]) == {"201", "4XX", "5XX"}  # /ingest answers 201 Created, never 200
    assert "wait" in [p["name"] for p in doc["paths"]["/jobs/{job}/run"]["post"]["parameters"]]
    assert set(doc["paths"]["/jobs/{job}/run"]["post"]["responses"]) >= {"200", "202", "4XX", "5XX"}


def test_docs_page_uses_only_local_assets(client):
    check_docs_page(client)
