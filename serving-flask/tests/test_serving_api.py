"""Serving endpoints with a stand-in registry (unit level: no database, no MLflow)."""

import numpy as np
import pytest

from mlstack_core.data.generator import FEATURES, generate_frame
from serving.model_store import prepare_estimator

ROW = dict(zip(FEATURES, generate_frame(1, seed=3)[list(FEATURES)].iloc[0].tolist(), strict=True))


def _load(client, registry, admin, fit, version="1", seed=0):
    registry.add(version, fit(seed))
    response = client.get("/loadModel/", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_predict_before_any_champion_is_503_json(client):
    response = client.post("/predict", json=ROW)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error_code"] == "MODEL_NOT_READY"
    assert "champion" in body["message"]


def test_single_and_batch_predictions_name_the_model(client, registry, admin, fit):
    _load(client, registry, admin, fit)
    single = client.post("/predict", json=ROW).get_json()
    batch = client.post("/predict", json={"rows": [ROW, ROW]}).get_json()
    assert single["model"]["version"] == "1" and single["model"]["run_id"] == "run-1"
    assert batch["predictions"] == [pytest.approx(single["prediction"])] * 2


def test_key_order_does_not_change_the_answer(client, registry, admin, fit):
    _load(client, registry, admin, fit)
    a = client.post("/predict", json=ROW).get_json()["prediction"]
    b = client.post("/predict", json=dict(reversed(list(ROW.items())))).get_json()["prediction"]
    assert a == b


def test_prediction_matches_the_pipeline_on_a_dataframe(client, registry, admin, fit):
    model = fit(1)
    registry.add("7", model)
    client.get("/loadModel/", headers=admin)
    frame = generate_frame(5, seed=9)[list(FEATURES)]
    got = client.post("/predict", json={"dataframe_records": frame.to_dict("records")}).get_json()["predictions"]
    assert np.allclose(got, model.predict(frame))


def test_model_fitted_with_another_column_order_is_served_correctly(fit):
    shuffled = list(reversed(FEATURES))
    model = fit(2, columns=shuffled)
    fast, order = prepare_estimator(model)
    frame = generate_frame(4, seed=5)
    ours = frame[list(FEATURES)].to_numpy()[:, order]
    assert np.allclose(fast.predict(ours), model.predict(frame[shuffled]))


def test_predict_dummy_keeps_the_original_shape(client, registry, admin, fit):
    _load(client, registry, admin, fit)
    body = client.post("/predictDummy/", json=ROW).get_json()
    assert set(body) >= {"modelInfo", "result"}
    assert isinstance(body["result"], float)


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (ROW | {"pH": "x"}, 422, "INVALID_ROWS"),
        ({"rows": [ROW, {"pH": 3}]}, 422, "INVALID_ROWS"),
        ([], 400, "NO_ROWS"),
        ({"rows": [ROW], "ids": [1]}, 400, "INVALID_IDS"),
    ],
)
def test_bad_input_is_a_json_4xx(client, registry, admin, service, payload, status, code, fit):
    _load(client, registry, admin, fit)
    response = client.post("/predict", json=payload, headers=service)  # the ETL's role may send ids
    assert response.status_code == status
    assert response.get_json()["error_code"] == code


@pytest.mark.parametrize("path", ["/predict", "/predictDummy/"])
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "AUTH_REQUIRED"),
        ({"Authorization": "Bearer not-the-service-token-0123"}, 403, "AUTH_INVALID"),
        ({"X-Admin-Token": "unit-test-admin-token-0123456789"}, 403, "AUTH_INVALID"),  # the admin role is not it
    ],
)
def test_row_ids_need_the_service_token(client, registry, admin, fit, path, headers, status, code):
    _load(client, registry, admin, fit)
    payload = {"rows": [ROW], "ids": ["65f0c0ffee0123456789abcd"]} if path == "/predict" else ROW | {"ids": ["x"]}
    response = client.post(path, json=payload, headers=headers)
    assert response.status_code == status
    body = response.get_json()
    assert body["error_code"] == code and "SERVICE_TOKEN" in body["message"]


def test_row_id_predictions_are_stored_before_the_answer_even_with_storage_off(client, registry, admin, service, fit):
    # The unit app runs with STORE_PREDICTIONS=false and its MongoDB on a closed port: a row-id request still
    # goes to MongoDB before answering, and the ETL hears that nothing was stored (its rows stay pending).
    _load(client, registry, admin, fit)
    response = client.post("/predict", json={"rows": [ROW], "ids": ["65f0c0ffee0123456789abcd"]}, headers=service)
    assert response.status_code == 503
    assert response.get_json()["error_code"] == "PREDICTIONS_NOT_STORED"


class RecordingWriter:
    """Stands in for the buffered writer: keeps what was queued."""

    def __init__(self) -> None:
        self.batches = []

    def add(self, batch) -> None:
        self.batches.append(batch)


@pytest.mark.parametrize("service_caller", [False, True])
def test_quality_is_kept_only_from_the_service_caller(registry, fit, service_caller, tmp_path):
    from serving import services
    from serving.model_store import ModelStore

    registry.add("1", fit())
    store = ModelStore(registry, name="m", alias="champion", poll_seconds=60, marker=tmp_path / "marker")
    store.refresh()
    writer = RecordingWriter()
    result = services.predict(
        {"rows": [ROW | {"quality": 9}, ROW]}, store=store, writer=writer, predictions=lambda: None,
        service_caller=service_caller, request_id="r",
    )
    assert result.stored is None and len(writer.batches) == 1
    assert writer.batches[0].quality == ([9, None] if service_caller else None)


def test_non_json_body(client):
    response = client.post("/predict", data="fixed acidity=7", content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_reload_needs_the_admin_token(client, registry, fit):
    registry.add("1", fit())
    assert client.get("/loadModel/").status_code == 401
    assert client.post("/model/reload", headers={"X-Admin-Token": "wrong-token-000000000"}).status_code == 403
    assert registry.loads == 0


def test_reload_switches_version_and_model_info_shows_it(client, registry, admin, fit):
    _load(client, registry, admin, fit, "1")
    assert client.get("/getModelInfo/").get_json()["model"]["version"] == "1"
    registry.add("2", fit(5))
    body = client.post("/model/reload", headers=admin).get_json()
    assert body["reloaded"] is True and body["model"]["version"] == "2"
    assert client.get("/model").get_json()["model"]["version"] == "2"


def test_registry_down_keeps_the_served_model(client, registry, admin, fit):
    _load(client, registry, admin, fit, "1")
    registry.fail = True
    client.get("/loadModel/", headers=admin)
    assert client.post("/predict", json=ROW).status_code == 200
    assert "unreachable" in client.get("/model").get_json()["last_error"]


@pytest.mark.parametrize(("method", "path", "status"), [("get", "/nope", 404), ("get", "/predict", 405)])
def test_framework_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.get_json()["error_code"] in {"NOT_FOUND", "METHOD_NOT_ALLOWED"}


def test_too_large_body_is_json_413(client):
    response = client.post("/predict", data=b"x" * (9 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error_code"] == "PAYLOAD_TOO_LARGE"


def test_database_down_is_503_json(client):
    response = client.get("/getLengthData/")
    assert response.status_code == 503
    assert response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("n", ["0", "1001", "abc", "-1"])
def test_latest_rejects_bad_n(client, n):
    response = client.get(f"/getLatestData/?n={n}")
    assert response.status_code == 400


def test_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_metrics_label_unknown_paths_with_one_label(client):
    for i in range(50):
        client.get(f"/random-{i}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "random-" not in text
    assert 'route="<unmatched>"' in text
