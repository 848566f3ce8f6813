"""Serving's OpenAPI document lists every route; /docs serves Swagger UI from local assets."""

from devstack.openapi_checks import admin_operations, check_docs_page, check_document


def test_document_is_openapi_31_and_lists_every_route(app, client):
    doc = check_document(app, client)
    assert {"POST /model/reload", "GET /loadModel/"} <= admin_operations(doc)
    assert "POST /predict" not in admin_operations(doc)
    predict = doc["paths"]["/predict"]["post"]
    assert {"serviceToken": []} in predict["security"]
    assert "application/json" in predict["requestBody"]["content"]
    answer = predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"model", "request_id", "prediction", "predictions", "stored"} <= set(
        doc["components"]["schemas"][answer]["properties"])
    assert [p["name"] for p in doc["paths"]["/data/latest"]["get"]["parameters"]] == ["n"]
    assert doc["paths"]["/getLengthData/"]["get"]["deprecated"] is True
    # The original keys and MLflow's scoring answer are in the document.
    assert {"lengthData", "count", "pending"} <= set(_answer(doc, "/getLengthData/", "get")["properties"])
    assert set(_answer(doc, "/invocations", "post")["properties"]) == {"predictions"}


def _answer(doc, path, method):
    ref = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_docs_page_uses_only_local_assets(client):
    check_docs_page(client)
