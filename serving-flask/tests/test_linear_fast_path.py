"""The folded linear predict gives the pipeline's own predictions; anything it cannot fold keeps the generic path."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from mlstack_core.data.generator import FEATURES, generate_frame
from serving.model_store import LoadedModel, linear_form, prepare_estimator

FRAME = generate_frame(600, seed=11)


def _fitted(steps, columns=FEATURES):
    model = Pipeline(steps) if isinstance(steps, list) else steps
    return model.fit(pd.DataFrame(FRAME[list(columns)]), FRAME["quality"])


def _served(model) -> LoadedModel:
    estimator, order = prepare_estimator(model)
    return LoadedModel("m", "1", None, "champion", estimator, order, linear=linear_form(model))


@pytest.mark.parametrize(
    "steps",
    [
        [("model", ElasticNet(alpha=0.5, l1_ratio=0.01))],  # what training registers by default
        [("scaler", StandardScaler()), ("model", ElasticNet(alpha=0.1, l1_ratio=0.5))],
        [("scaler", StandardScaler(with_mean=False)), ("model", Ridge(alpha=2.0))],
        [("scaler", StandardScaler(with_std=False)), ("model", Lasso(alpha=0.01))],
        [("a", StandardScaler()), ("b", StandardScaler()), ("model", LinearRegression())],
        [("skip", "passthrough"), ("model", LinearRegression(fit_intercept=False))],
        LinearRegression(),
    ],
    ids=["elasticnet", "scaled-elasticnet", "scaled-no-mean-ridge", "centred-lasso", "two-scalers", "passthrough",
         "bare-estimator"],
)
def test_folded_predictions_equal_the_pipeline(steps):
    model = _fitted(steps)
    served = _served(model)
    assert served.linear is not None
    rows = generate_frame(300, seed=12)[list(FEATURES)]
    expected = model.predict(rows)
    assert np.allclose(served.predict(rows.to_numpy()), expected, rtol=1e-12, atol=1e-12)
    # One row, the hot path's shape.
    assert np.allclose(served.predict(rows.to_numpy()[:1]), expected[:1], rtol=1e-12, atol=1e-12)


def test_another_column_order_is_folded_into_the_coefficients():
    shuffled = list(reversed(FEATURES))
    model = _fitted([("scaler", StandardScaler()), ("model", ElasticNet(alpha=0.1))], columns=shuffled)
    served = _served(model)
    rows = generate_frame(50, seed=13)
    assert np.allclose(served.predict(rows[list(FEATURES)].to_numpy()), model.predict(rows[shuffled]),
                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "steps",
    [
        [("scaler", MinMaxScaler()), ("model", ElasticNet(alpha=0.1))],  # a transformer it does not fold
        [("model", DecisionTreeRegressor(max_depth=3, random_state=0))],  # not linear
    ],
    ids=["minmax-scaler", "tree"],
)
def test_what_cannot_be_folded_keeps_the_generic_predict(steps):
    model = _fitted(steps)
    served = _served(model)
    assert served.linear is None
    rows = generate_frame(20, seed=14)[list(FEATURES)]
    assert np.allclose(served.predict(rows.to_numpy()), model.predict(rows))
