"""Data drift without a heavy dependency: quantile-binned references, PSI and a binned KS statistic.

Training records a *reference* of the rows a model was fitted on: for every feature the inner edges of its
quantile bins (deciles by default) and the share of training rows in each bin. Serving later bins recent
inputs with the same edges and compares the two distributions:

- PSI (population stability index): ``sum((actual - expected) * ln(actual / expected))`` over the bins,
  shares floored at ``EPSILON`` so an empty bin stays finite. Common reading: < 0.1 stable, 0.1-0.25 a
  moderate shift, > 0.25 a significant shift. With N recent rows and k bins, sampling noise alone gives about
  (k - 1) / N, so windows of a few hundred rows and more are meaningful.
- KS: the largest gap between the two cumulative distributions, evaluated at the reference's bin edges
  (a lower bound of the exact two-sample statistic, exact enough for alerting, in [0, 1]).

The reference is plain JSON (``REFERENCE_FORMAT``), a few kilobytes for the 11 wine features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REFERENCE_FORMAT = 1
REFERENCE_ARTIFACT = "drift_reference.json"
DEFAULT_BINS = 10
EPSILON = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """How far one feature's recent values moved from the reference."""

    psi: float
    ks: float


def build_reference(features: np.ndarray, names: Sequence[str], *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The reference of a training matrix (rows x len(names)): per feature, quantile bin edges and shares."""
    data = np.asarray(features, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(names):
        raise ValueError(f"expected a matrix with {len(names)} columns, got shape {data.shape}")
    if len(data) == 0:
        raise ValueError("cannot build a drift reference from zero rows")
    quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        column = data[:, i]
        # Ties (e.g. a feature with few distinct values) collapse edges: keep each edge once.
        edges = np.unique(np.quantile(column, quantiles))
        out[name] = {"edges": edges.tolist(), "proportions": proportions(column, edges).tolist()}
    return {"format": REFERENCE_FORMAT, "bins": bins, "rows": len(data), "features": out}


def proportions(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Share of values in each of the len(edges) + 1 bins; bin i holds edges[i-1] < v <= edges[i]."""
    edges = np.asarray(edges, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray, *, epsilon: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=np.float64), epsilon, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), epsilon, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_binned(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest gap between the cumulative shares of two distributions over the same bins."""
    gap = np.abs(np.cumsum(np.asarray(expected, dtype=np.float64)) - np.cumsum(np.asarray(actual, dtype=np.float64)))
    return float(min(gap.max(initial=0.0), 1.0))


def validate_reference(reference: Mapping[str, Any], names: Sequence[str]) -> None:
    """Raise ValueError unless the reference has this format and a consistent entry for every feature."""
    if reference.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"unsupported drift reference format {reference.get('format')!r}")
    features = reference.get("features") or {}
    for name in names:
        entry = features.get(name)
        if not isinstance(entry, Mapping):
            raise ValueError(f"drift reference has no entry for feature {name!r}")
        if len(entry.get("proportions", ())) != len(entry.get("edges", ())) + 1:
            raise ValueError(f"drift reference of {name!r} needs one more proportion than edges")


def compare(reference: Mapping[str, Any], recent: np.ndarray, names: Sequence[str]) -> dict[str, FeatureDrift]:
    """PSI and KS of every feature of recent rows (rows x len(names), same column order) against a reference."""
    validate_reference(reference, names)
    data = np.asarray(recent, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(names) or len(data) == 0:
        raise ValueError(f"expected a non-empty matrix with {len(names)} columns, got shape {data.shape}")
    result: dict[str, FeatureDrift] = {}
    for i, name in enumerate(names):
        entry = reference["features"][name]
        expected = np.asarray(entry["proportions"], dtype=np.float64)
        actual = proportions(data[:, i], entry["edges"])
        result[name] = FeatureDrift(psi=psi(expected, actual), ks=ks_binned(expected, actual))
    return result
