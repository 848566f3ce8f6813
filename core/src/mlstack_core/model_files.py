"""Loading a registered model version: skops files only, holding only the types on an allow-list.

The registry is the trust boundary: whoever can register a version and move ``champion`` decides what serving
runs. MLflow's own loader (``mlflow.sklearn.load_model``) lets the artifact decide: its ``MLmodel`` names the
serialization (pickle and cloudpickle run arbitrary code when loaded) and even the skops types to trust. Here
the stack decides instead. A version loads only if its ``MLmodel`` says skops, and only if every object in the
file is plain data (builtins, numpy arrays) or one of :data:`TRUSTED_TYPES`, the estimators training builds
(``training/model.py``); the same list is skops's ``trusted=``. Anything else is a :class:`ModelRefused`, and
no byte of the file is deserialized. ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (set for both services)
closes MLflow's own loaders as well; this module does not need them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SKOPS = "skops"
# What training/model.py builds: a Pipeline of an optional StandardScaler and an ElasticNet. A test in the
# training service checks that every type it can build is listed; widen this list when training changes.
TRUSTED_TYPES = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
})
# Plain data a fitted estimator's attributes are made of (skops itself refuses functions and other objects).
_DATA_BUILTINS = frozenset({"bool", "bytes", "complex", "dict", "float", "int", "list", "NoneType", "set", "str",
                            "tuple"})


class ModelRefused(RuntimeError):
    """A version's files are not a model this stack loads; the message says why, naming no host or path."""


def load_registered_model(name: str, version: str, *, tracking_uri: str) -> Any:
    """Download a registered version's files through the tracking server and load them with :func:`load_model_dir`."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="mlstack-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tmp, tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
        try:
            return load_model_dir(Path(local))
        except ModelRefused as exc:
            logger.error("model %s version %s refused: %s", name, version, exc)
            raise


def load_model_dir(path: Path) -> Any:
    """Load the scikit-learn model of a local MLflow model folder, or raise ModelRefused."""
    flavor = _sklearn_flavor(path)
    fmt = flavor.get("serialization_format", "pickle")  # MLflow's own default when the key is missing
    if fmt != SKOPS:
        raise ModelRefused(
            f"stored with {fmt!r} serialization; only skops models are loaded (pickle deserialization is disabled)"
        )
    model_file = (path / str(flavor.get("pickled_model", ""))).resolve()
    if not model_file.is_file() or not model_file.is_relative_to(path.resolve()):
        raise ModelRefused("the sklearn flavour names no model file inside the model folder")
    untrusted = sorted(set(_types_in(model_file)) - TRUSTED_TYPES)
    if untrusted:
        raise ModelRefused(f"holds types that are not on the allow-list: {', '.join(untrusted[:5])}")

    import skops.io

    try:
        model = skops.io.load(model_file, trusted=sorted(TRUSTED_TYPES))
    except Exception as exc:
        # skops refuses what its own defaults do not trust (functions, unknown objects) on top of our check.
        raise ModelRefused(f"the skops file does not load with the allow-list ({type(exc).__name__})") from exc
    if _type_name(type(model)) not in TRUSTED_TYPES:
        raise ModelRefused(f"the file holds a {_type_name(type(model))}, not an allow-listed estimator")
    return model


def _sklearn_flavor(path: Path) -> dict[str, Any]:
    try:
        mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelRefused(f"no readable MLmodel file ({type(exc).__name__})") from exc
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        raise ModelRefused("the MLmodel file has no sklearn flavour")
    return flavor


def _types_in(model_file: Path) -> Iterator[str]:
    """Every type a skops file would construct, read from its schema (nothing is deserialized), data omitted."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelRefused(f"not a skops file ({type(exc).__name__})") from exc
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str) and not _is_data(module, cls):
                yield f"{module}.{cls}"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _is_data(module: str, cls: str) -> bool:
    return (module == "builtins" and cls in _DATA_BUILTINS) or module == "numpy"


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
