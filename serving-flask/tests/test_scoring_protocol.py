"""MLflow's scoring protocol on serving (unit level: stand-in registry, no database): inputs, answers, errors."""

from __future__ import annotations

import pandas as pd
import pytest

from mlstack_core.data.generator import FEATURES, generate_frame

FRAME = generate_frame(3, seed=8)[list(FEATURES)]
RECORDS = FRAME.to_dict("records")


@pytest.fixture
def served(client, registry, admin, fit):
    model = fit(0)
    registry.add("1", model)
    assert client.get("/loadModel/", headers=admin).status_code == 200
    return model


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": FRAME.to_dict("split")},
        {"dataframe_split": {"columns": list(FEATURES), "data": FRAME.to_numpy().tolist()}},
        {"dataframe_records": RECORDS},
        {"instances": RECORDS},
        {"inputs": RECORDS},
        {"inputs": {name: FRAME[name].tolist() for name in FEATURES}},
        {"instances": {name: FRAME[name].tolist() for name in FEATURES}, "params": {"ignored": 1}},
    ],
    ids=["split", "split-no-index", "records", "instances", "inputs", "inputs-columns", "instances-columns+params"],
)
def test_every_json_format_answers_the_models_predictions_and_nothing_else(client, served, body):
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert set(answer) == {"predictions"}
    assert answer["predictions"] == pytest.approx(served.predict(pd.DataFrame(FRAME)).tolist())


@pytest.mark.parametrize("sep", [",", ";"])
def test_csv_input(client, served, sep):
    response = client.post("/invocations", data=FRAME.to_csv(index=False, sep=sep), content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"] == pytest.approx(served.predict(pd.DataFrame(FRAME)).tolist())


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": RECORDS}, 400, "INVALID_BODY"),  # a bare list: MLflow wants one of the four keys
        ({"json": {"dataframe_records": RECORDS, "inputs": RECORDS}}, 400, "INVALID_BODY"),
        ({"json": {"rows": RECORDS}}, 400, "INVALID_BODY"),
        ({"json": {"instances": [[1.0] * 11]}}, 400, "INVALID_BODY"),  # no names: this model has named columns
        ({"json": {"inputs": {"alcohol": [1.0, 2.0], "pH": [3.0]}}}, 400, "INVALID_BODY"),
        ({"json": {"inputs": {"alcohol": 1.0}}}, 400, "INVALID_BODY"),
        ({"json": {"inputs": "text"}}, 400, "INVALID_BODY"),
        ({"json": {"dataframe_records": [RECORDS[0] | {"pH": "acid"}]}}, 422, "INVALID_ROWS"),
        ({"json": {"dataframe_split": {"columns": [["pH"]], "data": [[1]]}}}, 400, "INVALID_BODY"),
        ({"data": "a,b\n1,2\n", "content_type": "text/csv"}, 422, "INVALID_ROWS"),
        ({"data": b"pH\n\xff\n", "content_type": "text/csv"}, 400, "INVALID_CSV"),
        ({"data": "x", "content_type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": "[" * 100_000, "content_type": "application/json"}, 400, None),
        ({"json": {"inputs": {"alcohol": [0.0] * 10_001}}}, 413, "TOO_MANY_ROWS"),
    ],
)
def test_bad_input_is_a_json_4xx(client, served, kwargs, status, code):
    response = client.post("/invocations", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["message"]
    if code:
        assert body["error_code"] == code


def test_ping_follows_the_model_and_version_names_mlflow(client, registry, admin, fit):
    import mlflow

    before = client.get("/ping")
    assert before.status_code == 503 and before.get_json()["error_code"] == "MODEL_NOT_READY"
    registry.add("1", fit(0))
    client.get("/loadModel/", headers=admin)
    assert client.get("/ping").status_code == 200
    assert client.get("/version").get_data(as_text=True) == mlflow.__version__
