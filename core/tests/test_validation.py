"""Row validation shared by ingest and predict."""

import math

import numpy as np
import pytest

from mlstack_core.data.generator import BOUNDS, FEATURES
from mlstack_core.errors import ApiError
from mlstack_core.validation import MAX_ROWS_PER_REQUEST, extract_rows, require_valid, validate_rows

ROW = {
    "fixed acidity": 7.0, "volatile acidity": 0.27, "citric acid": 0.36, "residual sugar": 20.7,
    "chlorides": 0.045, "free sulfur dioxide": 45.0, "total sulfur dioxide": 170.0, "density": 1.001,
    "pH": 3.0, "sulphates": 0.45, "alcohol": 8.8,
}


def test_valid_row_is_placed_in_feature_order_whatever_the_key_order():
    reordered = dict(reversed(list(ROW.items())))
    parsed = validate_rows([ROW, reordered])
    assert parsed.ok
    expected = [ROW[name] for name in FEATURES]
    assert parsed.features.tolist() == [expected, expected]


def test_underscore_names_and_quality_are_accepted():
    row = {name.replace(" ", "_"): value for name, value in ROW.items()} | {"quality": 6}
    parsed = validate_rows([row])
    assert parsed.ok and parsed.quality == [6]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"pH": "3.1"}, "pH", "finite number"),
        ({"pH": True}, "pH", "finite number"),
        ({"pH": math.nan}, "pH", "finite number"),
        ({"pH": math.inf}, "pH", "finite number"),
        ({"pH": 15}, "pH", "between"),
        ({"alcohol": -1}, "alcohol", "between"),
        ({"quality": 6.5}, "quality", "whole number"),
        ({"quality": 11}, "quality", "between"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_each_bad_value_is_reported_by_field(change, field, message):
    parsed = validate_rows([ROW, ROW | change])
    assert len(parsed.errors) == 1
    assert parsed.errors[0]["row"] == 1
    assert message in parsed.errors[0]["errors"][field]


def test_missing_features_are_all_listed():
    parsed = validate_rows([{"pH": 3.0}])
    assert set(parsed.errors[0]["errors"]) == set(FEATURES) - {"pH"}


def test_non_object_row():
    parsed = validate_rows([[1, 2, 3]])
    assert "_row" in parsed.errors[0]["errors"]


def test_require_valid_raises_422_with_every_invalid_row():
    parsed = validate_rows([ROW | {"pH": 99}, ROW, ROW | {"density": None}])
    with pytest.raises(ApiError) as info:
        require_valid(parsed)
    assert info.value.status == 422
    assert [e["row"] for e in info.value.details["invalid_rows"]] == [0, 2]


def test_bounds_cover_every_feature():
    assert set(FEATURES) <= set(BOUNDS)


@pytest.mark.parametrize(
    "payload",
    [
        [ROW, ROW],
        {"rows": [ROW, ROW]},
        {"dataframe_records": [ROW, ROW]},
        {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values()), list(ROW.values())]}},
    ],
)
def test_batch_shapes_give_the_same_rows(payload):
    rows, single = extract_rows(payload)
    assert not single
    parsed = validate_rows(rows)
    assert parsed.ok and np.array_equal(parsed.features[0], parsed.features[1])


def test_single_row_shape():
    rows, single = extract_rows(ROW)
    assert single and rows == [ROW]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ("text", 400),
        ([], 400),
        ({"rows": "x"}, 400),
        ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, 400),
        ([ROW] * (MAX_ROWS_PER_REQUEST + 1), 413),
    ],
)
def test_bad_shapes(payload, status):
    with pytest.raises(ApiError) as info:
        extract_rows(payload)
    assert info.value.status == status
