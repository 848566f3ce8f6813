"""The shared model loader: skops files of allow-listed types load; pickle flavours and other types are refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from mlstack_core.model_files import TRUSTED_TYPES, ModelRefused, load_model_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _rows() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.random((40, 3)), columns=["a", "b", "c"])
    return x, x.sum(axis=1).to_numpy()


def _fitted(model):
    x, y = _rows()
    return model.fit(x, y)


def _save(model, path: Path, fmt: str = "skops") -> Path:
    import mlflow.sklearn

    # Explicit (empty) requirements: inferring them imports the model in a subprocess, seconds per save.
    mlflow.sklearn.save_model(model, path, serialization_format=fmt, pip_requirements=[])
    return path


def _edit_flavor(path: Path, **changes) -> None:
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(changes)
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))


@pytest.mark.parametrize("standardize", [False, True])
def test_training_pipelines_in_skops_load(tmp_path, standardize):
    steps = [("scaler", StandardScaler())] if standardize else []
    model = _fitted(Pipeline([*steps, ("model", ElasticNet(alpha=0.1))]))
    loaded = load_model_dir(_save(model, tmp_path / "m"))
    x, _ = _rows()
    assert isinstance(loaded, Pipeline)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_pickle_flavours_are_refused(tmp_path, fmt):
    path = _save(_fitted(Pipeline([("model", ElasticNet())])), tmp_path / "m", fmt)
    with pytest.raises(ModelRefused, match=f"stored with '{fmt}' serialization; only skops"):
        load_model_dir(path)


def test_a_flavour_without_a_format_counts_as_pickle(tmp_path):
    path = _save(_fitted(Pipeline([("model", ElasticNet())])), tmp_path / "m", "pickle")
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    del mlmodel["flavors"]["sklearn"]["serialization_format"]
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ModelRefused, match="'pickle'"):
        load_model_dir(path)


class _Payload:
    """Unpickling this creates a file: proof of code run by a load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_is_never_run(tmp_path):
    path = _save(_fitted(Pipeline([("model", ElasticNet())])), tmp_path / "m", "pickle")
    marker = tmp_path / "code-ran"
    (path / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelRefused):
        load_model_dir(path)
    # Also when the MLmodel claims skops but names the pickle file: it is not a skops archive.
    _edit_flavor(path, serialization_format="skops")
    with pytest.raises(ModelRefused, match="not a skops file"):
        load_model_dir(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "model",
    [Ridge(),
     Pipeline([("poly", PolynomialFeatures()), ("model", ElasticNet())])],
    ids=["other-estimator", "other-step"],
)
def test_skops_models_of_other_types_are_refused(tmp_path, model):
    path = _save(_fitted(model), tmp_path / "m")
    with pytest.raises(ModelRefused, match="not on the allow-list"):
        load_model_dir(path)


def test_the_artifact_cannot_widen_the_allow_list(tmp_path):
    path = _save(_fitted(Ridge()), tmp_path / "m")
    _edit_flavor(path, skops_trusted_types=["sklearn.linear_model._ridge.Ridge"])
    with pytest.raises(ModelRefused, match="Ridge"):
        load_model_dir(path)


def test_a_model_file_outside_the_folder_is_refused(tmp_path):
    path = _save(_fitted(Pipeline([("model", ElasticNet())])), tmp_path / "m")
    (tmp_path / "outside.skops").write_bytes((path / "model.skops").read_bytes())
    _edit_flavor(path, pickled_model="../outside.skops")
    with pytest.raises(ModelRefused, match="no model file inside"):
        load_model_dir(path)


def test_a_folder_without_an_sklearn_flavour_is_refused(tmp_path):
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {"loader_module": "x"}}}))
    with pytest.raises(ModelRefused, match="no sklearn flavour"):
        load_model_dir(tmp_path)
    with pytest.raises(ModelRefused, match="no readable MLmodel"):
        load_model_dir(tmp_path / "missing")


def test_the_allow_list_names_only_estimators():
    assert all(name.startswith("sklearn.") for name in TRUSTED_TYPES)
