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
