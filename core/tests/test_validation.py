"""Row validation shared by ingest and predict."""

import math

import numpy as np
import pytest

from mlstack_core.data.generator import BOUNDS, FEATURES
from mlstack_core.errors import http_status
from mlstack_core.service_errors import ServiceError
from mlstack_core.validation import (
    MAX_ROWS_PER_REQUEST,
    bounded_int,
    extract_rows,
    require_valid,
    validate_rows,
)

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
    with pytest.raises(ServiceError) as info:
        require_valid(parsed)
    assert http_status(info.value) == 422
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
        (None, 400),
        (7, 400),
        (True, 400),
        ({"rows": None}, 400),
        ({"rows": {"pH": 3}}, 400),
        ({"dataframe_records": "x"}, 400),
        ({"dataframe_split": None}, 400),
        ({"dataframe_split": [[1]]}, 400),
        ({"dataframe_split": {"data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": "pH", "data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": [["pH"]], "data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": [{"a": 1}], "data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": [None], "data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": [1], "data": [[1]]}}, 400),
        ({"dataframe_split": {"columns": ["pH", "pH"], "data": [[1, 2]]}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": "x"}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": [3]}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": [{"pH": 3}]}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": [[3]], "index": 0}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": [[3]], "index": [0, 1]}}, 400),
        ({"dataframe_split": {"columns": ["pH"], "data": [[3]] * (MAX_ROWS_PER_REQUEST + 1)}}, 413),
    ],
)
def test_bad_shapes(payload, status):
    with pytest.raises(ServiceError) as info:
        extract_rows(payload)
    assert http_status(info.value) == status
    assert info.value.error_code in {"INVALID_BODY", "NO_ROWS", "TOO_MANY_ROWS"}


def test_dataframe_split_with_a_matching_index_is_accepted():
    split = {"columns": list(ROW), "data": [list(ROW.values())], "index": [41]}
    rows, _ = extract_rows({"dataframe_split": split})
    assert rows == [ROW]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (int("9" * 400), "must be a finite number"),  # a 400-digit integer overflows float64
        (-(10**309), "must be a finite number"),
        (1e308 * 10, "must be a finite number"),
        (True, "must be a finite number"),
        (None, "must be a finite number"),
        ("3.1", "must be a finite number"),
        ({"value": 3.1}, "must be a finite number"),
        ([3.1], "must be a finite number"),
        ([[[]]], "must be a finite number"),
    ],
)
@pytest.mark.parametrize("batch", [1, 10], ids=["row-by-row", "block-size"])
def test_hostile_feature_values_are_named_per_field(value, message, batch):
    parsed = validate_rows([ROW | {"pH": value}] * batch)
    assert [e["errors"] for e in parsed.errors] == [{"pH": message}] * batch


@pytest.mark.parametrize("value", [10**400, -(10**400), True, "7", {"q": 7}, [7], 7.5])
def test_hostile_quality_values_are_named(value):
    parsed = validate_rows([ROW | {"quality": value}])
    assert parsed.errors[0]["errors"] == {"quality": "must be a whole number"}


def test_a_huge_unknown_field_name_is_not_echoed_whole():
    parsed = validate_rows([ROW | {"x" * 100_000: 1}])
    (name,) = parsed.errors[0]["errors"]
    assert name.startswith("xxx") and len(name) < 100


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 10), ("1", 1), ("007", 7), ("1000", 1000)]
)
def test_bounded_int_reads_ascii_whole_numbers(raw, expected):
    assert bounded_int(raw, name="n", default=10, low=1, high=1000) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "0", "1001", "-1", "+5", " 5", "5 ", "1.0", "1e3", "abc", "\u00b2", "\u0663", "\uff15", "\u2075",
     "9" * 5000, "5\n"],
)
def test_bounded_int_refuses_anything_else_with_a_400(raw):
    with pytest.raises(ServiceError) as info:
        bounded_int(raw, name="n", default=10, low=1, high=1000)
    assert (http_status(info.value), info.value.error_code) == (400, "INVALID_PARAMETER")
    assert "n must be a whole number from 1 to 1000" in info.value.message


def _random_rows(rng, n: int) -> list:
    """Rows that are mostly valid, with every kind of problem sprinkled in at random."""
    problems = [
        lambda r: r | {"pH": "3.1"}, lambda r: r | {"pH": True}, lambda r: r | {"pH": math.nan},
        lambda r: r | {"alcohol": math.inf}, lambda r: r | {"pH": 15}, lambda r: r | {"density": None},
        lambda r: r | {"quality": 6.5}, lambda r: r | {"quality": 11}, lambda r: r | {"quality": None},
        lambda r: r | {"quality": 7}, lambda r: r | {"quality": 5.0}, lambda r: r | {"quality": True},
        lambda r: r | {"colour": "red"}, lambda r: {k: v for k, v in r.items() if k != "pH"},
        lambda r: {k.replace(" ", "_"): v for k, v in r.items()}, lambda r: r | {"pH": 3},
        lambda r: r | {"pH": np.float64(3.1)}, lambda r: [1, 2], lambda r: r | {"pH": 10**30},
        lambda r: r | {"pH": 10**400}, lambda r: r | {"quality": 10**400}, lambda r: r | {"pH": {"a": [1]}},
    ]
    rows = []
    for _ in range(n):
        row = {name: float(rng.uniform(low, high)) for name, (low, high) in BOUNDS.items() if name in FEATURES}
        if rng.random() < 0.05:
            row = problems[int(rng.integers(len(problems)))](row)
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_block_path_gives_exactly_what_row_by_row_checking_gives(seed):
    from mlstack_core.validation import _validate_row_by_row

    rng = np.random.default_rng(seed)
    rows = _random_rows(rng, int(rng.integers(8, 60)))
    fast, slow = validate_rows(rows), _validate_row_by_row(rows)
    assert fast.errors == slow.errors
    assert fast.quality == slow.quality
    if fast.ok:
        assert np.array_equal(fast.features, slow.features)


def test_a_valid_batch_takes_the_block_path(monkeypatch):
    import mlstack_core.validation as validation

    rows = [ROW | {"quality": 6}] * 20
    monkeypatch.setattr(validation, "_validate_row_by_row", lambda *a, **k: pytest.fail("row-by-row path used"))
    parsed = validate_rows(rows)
    assert parsed.ok and parsed.quality == [6] * 20
    assert parsed.features.shape == (20, len(FEATURES))
