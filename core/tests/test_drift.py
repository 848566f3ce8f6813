"""Drift statistics: references from training rows, PSI and binned KS against recent rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.drift import build_reference, compare, ks_binned, proportions, psi, validate_reference


@pytest.fixture(scope="module")
def reference():
    frame = generate_frame(3000, seed=1)
    return build_reference(frame[list(FEATURES)].to_numpy(), FEATURES)


def test_reference_is_small_json_with_deciles(reference):
    text = json.dumps(reference)
    assert len(text) < 8000
    assert reference["rows"] == 3000 and set(reference["features"]) == set(FEATURES)
    for entry in reference["features"].values():
        assert len(entry["proportions"]) == len(entry["edges"]) + 1
        assert sum(entry["proportions"]) == pytest.approx(1.0)
    alcohol = reference["features"]["alcohol"]["proportions"]
    assert max(alcohol) < 0.15  # deciles: about a tenth of the rows per bin


def test_same_distribution_is_stable(reference):
    recent = generate_frame(1000, seed=2)[list(FEATURES)].to_numpy()
    drift = compare(reference, recent, FEATURES)
    assert max(d.psi for d in drift.values()) < 0.1
    assert max(d.ks for d in drift.values()) < 0.1


def test_shifted_feature_drifts_and_only_that_one(reference):
    frame = generate_frame(1000, seed=3)
    frame["alcohol"] = frame["alcohol"] + 2.0
    drift = compare(reference, frame[list(FEATURES)].to_numpy(), FEATURES)
    assert drift["alcohol"].psi > 0.25 and drift["alcohol"].ks > 0.3
    others = [d.psi for name, d in drift.items() if name != "alcohol"]
    assert max(others) < 0.1


def test_psi_and_ks_of_known_shares():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    assert ks_binned([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4)
    # An empty bin stays finite thanks to the floor.
    assert np.isfinite(psi([0.5, 0.5], [1.0, 0.0]))


def test_bins_hold_values_up_to_their_upper_edge():
    assert proportions(np.array([1.0, 1.5, 2.0, 3.0]), [1.0, 2.0]).tolist() == [0.25, 0.5, 0.25]


def test_ties_collapse_edges():
    column = np.array([[1.0]] * 90 + [[2.0]] * 10)
    entry = build_reference(column, ["x"])["features"]["x"]
    assert len(entry["edges"]) < 9 and entry["edges"] == sorted(set(entry["edges"]))
    assert len(entry["proportions"]) == len(entry["edges"]) + 1


@pytest.mark.parametrize(
    "broken",
    [{"format": 99, "features": {}}, {"format": 1, "features": {}},
     {"format": 1, "features": {name: {"edges": [1.0], "proportions": [1.0]} for name in FEATURES}}],
)
def test_invalid_references_are_refused(broken):
    with pytest.raises(ValueError):
        validate_reference(broken, FEATURES)


def test_wrong_shapes_are_refused(reference):
    with pytest.raises(ValueError):
        compare(reference, np.empty((0, len(FEATURES))), FEATURES)
    with pytest.raises(ValueError):
        build_reference(np.ones((5, 3)), FEATURES)
