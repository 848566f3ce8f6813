"""Generated wine rows: reproducible, within bounds, faithful to the published figures, and learnable."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri
from scipy.stats import ks_2samp, rankdata
from sklearn.linear_model import ElasticNet, LinearRegression
from sklearn.model_selection import train_test_split

from mlstack_core.data.generator import (
    BOUNDS,
    COLUMNS,
    FEATURES,
    TARGET,
    generate_array,
    generate_frame,
    generate_rows,
    load_stats,
    physical_bounds,
)

ROWS = 20_000
SEED = 0
# Tolerances. The worst value seen over seeds 0..19 (20,000 rows each) is in brackets; each bound leaves at
# least 1.5x that, so a fixed seed passes with room to spare.
MEAN_TOL_STD = 0.05  # |mean - published mean| in published stds [0.020]
STD_REL_TOL = 0.10  # |std / published std - 1| [0.063]
# p10..p90 against the published percentiles, in stds [0.090]: sulphates and citric acid are recorded in steps
# of 0.01 = 0.08-0.09 std, so one step apart is the usual worst case.
DECILE_TOL_STD = 0.15
# Max |normal-scores correlation - published| over the 12x12 matrix [features 0.024, quality 0.029]. Quality's
# row is off by ~0.02 by design (part of its signal is the published OLS prediction, see the generator); ties
# need no extra slack because the published matrix was computed on the same tied, graded values.
CORR_TOL = 0.05
HIST_TOL = 0.02  # per-grade |proportion - published proportion| [0.0074]
REAL_OLS_R2 = 0.28  # the published OLS fit of quality on the real rows
OLS_R2_TOL = 0.03  # holdout LinearRegression R² around REAL_OLS_R2 [0.264..0.287]
# Holdout ElasticNet(alpha=0.5, l1_ratio=0.01) R² [0.189..0.204]. The penalty is strong for raw features (it
# zeroes density, std 0.003), so this model gets ~0.17 on the real rows too, not 0.28.
ELASTIC_NET_R2 = (0.17, 0.23)
KS_MAX = 0.1  # per-column KS statistic against the real rows [0.019]
REAL_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wine-quality.csv"


@pytest.fixture(scope="module")
def stats() -> dict:
    return load_stats()


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return generate_array(ROWS, seed=SEED)


def normal_scores_correlation(values: np.ndarray) -> np.ndarray:
    """Pearson correlation of normal scores, computed as the published matrix was (average ranks for ties)."""
    ranks = np.column_stack([rankdata(column) for column in values.T])
    return np.corrcoef(ndtri((ranks - 0.5) / len(values)), rowvar=False)


def published(stats: dict, key: str) -> np.ndarray:
    return np.array([stats[key][name] for name in COLUMNS])


def test_columns_follow_the_published_figures(stats):
    assert len(FEATURES) == 11 and TARGET == "quality"
    assert (*FEATURES, TARGET) == COLUMNS
    assert tuple(stats["columns"]) == COLUMNS
    assert load_stats() is stats  # cached


def test_same_seed_gives_same_rows_and_another_seed_other_rows():
    first = generate_array(1_000, seed=7)
    np.testing.assert_array_equal(first, generate_array(1_000, seed=7))
    assert not np.array_equal(first, generate_array(1_000, seed=8))
    assert not np.array_equal(generate_array(1_000), generate_array(1_000))
    # A longer draw extends a shorter one, so a row count change does not reshuffle earlier rows.
    np.testing.assert_array_equal(first[:10], generate_array(10, seed=7))


def test_rows_frame_and_array_agree_and_are_typed():
    array = generate_array(50, seed=3)
    frame = generate_frame(50, seed=3)
    rows = generate_rows(50, seed=3)
    assert array.shape == (50, 12) and array.dtype == np.float64
    assert list(frame.columns) == list(COLUMNS)
    assert frame[TARGET].dtype == np.int64 and all(frame[name].dtype == np.float64 for name in FEATURES)
    np.testing.assert_array_equal(frame.to_numpy(dtype=float), array)
    assert [list(row) for row in rows] == [list(COLUMNS)] * 50
    assert all(type(row[TARGET]) is int for row in rows)
    assert all(type(row[name]) is float for row in rows for name in FEATURES)
    np.testing.assert_array_equal(np.array([[row[name] for name in COLUMNS] for row in rows]), array)


def test_empty_and_negative_counts():
    assert generate_array(0, seed=1).shape == (0, 12)
    assert generate_rows(0) == []
    assert generate_frame(0).columns.tolist() == list(COLUMNS)
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate_array(-1)
    with pytest.raises(TypeError):
        generate_array(2.5)  # type: ignore[arg-type]


def test_values_stay_within_physical_bounds_and_the_observed_range(sample, stats):
    for j, name in enumerate(COLUMNS):
        column = sample[:, j]
        low, high = BOUNDS[name]
        assert low <= column.min() and column.max() <= high, name
        observed = stats["percentiles"][name]
        assert observed[0] <= column.min() and column.max() <= observed[100], name


def test_values_are_rounded_to_the_recorded_decimals(sample, stats):
    for j, name in enumerate(COLUMNS):
        decimals = min(stats["decimals"][name], 6)
        np.testing.assert_array_equal(np.round(sample[:, j], decimals), sample[:, j], err_msg=name)
    assert set(np.unique(sample[:, -1])) <= set(range(3, 10))


def test_physical_bounds_are_a_copy_and_wider_than_the_data(stats):
    bounds = physical_bounds()
    assert bounds == BOUNDS and bounds is not BOUNDS
    assert set(bounds) == set(COLUMNS)
    for name, (low, high) in bounds.items():
        assert low <= stats["percentiles"][name][0] and stats["percentiles"][name][100] < high, name


def test_means_and_stds_match_the_published_ones(sample, stats):
    mean, std = published(stats, "mean"), published(stats, "std")
    mean_error = np.abs(sample.mean(axis=0) - mean) / std
    std_error = np.abs(sample.std(axis=0, ddof=1) / std - 1)
    assert mean_error.max() <= MEAN_TOL_STD, dict(zip(COLUMNS, mean_error.round(3), strict=True))
    assert std_error.max() <= STD_REL_TOL, dict(zip(COLUMNS, std_error.round(3), strict=True))


def test_deciles_match_the_published_percentiles(sample, stats):
    deciles = np.arange(10, 100, 10)
    expected = np.array([[stats["percentiles"][name][k] for k in deciles] for name in COLUMNS])
    error = np.abs(np.percentile(sample, deciles, axis=0).T - expected) / published(stats, "std")[:, None]
    assert error.max() <= DECILE_TOL_STD, dict(zip(COLUMNS, error.max(axis=1).round(3), strict=True))


def test_normal_scores_correlation_matches_the_published_matrix(sample, stats):
    difference = np.abs(normal_scores_correlation(sample) - np.array(stats["normal_scores_correlation"]))
    assert difference.max() <= CORR_TOL, np.unravel_index(difference.argmax(), difference.shape)


def test_quality_histogram_matches_the_published_counts(sample, stats):
    grades = sorted(int(grade) for grade in stats["quality_counts"])
    counts = np.array([stats["quality_counts"][str(grade)] for grade in grades], dtype=float)
    generated = np.array([(sample[:, -1] == grade).mean() for grade in grades])
    assert np.abs(generated - counts / counts.sum()).max() <= HIST_TOL


@pytest.mark.parametrize("seed", range(5))
def test_quality_stays_learnable(seed):
    data = generate_array(ROWS, seed=seed)
    split = train_test_split(data[:, :-1], data[:, -1], test_size=0.2, random_state=0)
    x_train, x_test, y_train, y_test = split
    ols = LinearRegression().fit(x_train, y_train).score(x_test, y_test)
    elastic_net = ElasticNet(alpha=0.5, l1_ratio=0.01).fit(x_train, y_train).score(x_test, y_test)
    assert abs(ols - REAL_OLS_R2) <= OLS_R2_TOL, ols
    assert ELASTIC_NET_R2[0] <= elastic_net <= ELASTIC_NET_R2[1], elastic_net


@pytest.mark.skipif(not REAL_CSV.is_file(), reason=f"real data set not available at {REAL_CSV}")
def test_marginals_match_the_real_rows(sample):
    real = pd.read_csv(REAL_CSV)
    statistics = {name: ks_2samp(sample[:, j], real[name]).statistic for j, name in enumerate(COLUMNS)}
    assert max(statistics.values()) < KS_MAX, statistics
