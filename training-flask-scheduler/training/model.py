"""The model: the original template's ElasticNet in a Pipeline fitted on named columns, and its holdout metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlstack_core.data.generator import FEATURES, TARGET

METRICS = ("rmse", "mae", "r2")


@dataclass(frozen=True)
class Split:
    """Training rows and the holdout rows both champion and challenger are scored on."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series


def split_holdout(frame: pd.DataFrame, *, fraction: float, seed: int) -> Split:
    """A seeded train/holdout split; the feature columns are exactly FEATURES, in that order."""
    x = frame[list(FEATURES)]
    y = frame[TARGET]
    x_train, x_holdout, y_train, y_holdout = train_test_split(x, y, test_size=fraction, random_state=seed)
    return Split(x_train, y_train, x_holdout, y_holdout)


def build_pipeline(*, alpha: float, l1_ratio: float, standardize: bool, seed: int) -> Pipeline:
    """The estimator; the scaler is optional (off by default, as in the original template)."""
    steps: list[tuple[str, Any]] = [("scaler", StandardScaler())] if standardize else []
    steps.append(("model", ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=seed)))
    return Pipeline(steps)


def fit(pipeline: Pipeline, split: Split) -> Pipeline:
    """Fit on a DataFrame so feature_names_in_ records the column order by name (serving relies on it)."""
    return pipeline.fit(split.x_train, split.y_train)


def evaluate(model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """rmse, mae and r2 of a model on the given rows (columns put in the model's own fitted order)."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        x = x[[str(name) for name in names]]
    predicted = np.asarray(model.predict(x), dtype=np.float64)
    return {
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": float(mean_absolute_error(y, predicted)),
        "r2": float(r2_score(y, predicted)),
    }
