"""The model this worker serves, and how it follows the registry's champion alias.

Each Gunicorn worker keeps its own copy and a watcher thread that swaps in a new version once it is fully
loaded (a single reference assignment, so a request always sees a complete model: no failed request during a
switch). The reload endpoint reloads its own worker at once and touches a marker file that every other worker
checks four times a second, so a nudge reaches all workers in well under a second plus the load time.

One worker per instance asks the registry every ``MODEL_POLL_SECONDS`` which version holds the alias: the
one holding an exclusive lock on a file beside the marker (``flock``; the kernel drops it when that worker
exits, and a sibling takes it at its next check). When it swaps in a new version it touches the marker, so its
siblings follow at once. The others ask on their own only every ``FOLLOWER_POLL_FACTOR`` times that (in case
the lock holder is stuck), and every ``MODEL_POLL_SECONDS`` while they have no model or their last check
failed. Each registry check costs the MLflow server about 16 ms of CPU behind its basic auth and the worker
about 3 ms (measured, bench/README.md "Open-loop tail"): with every worker polling, those bursts were the
open-loop p99 on a two-core machine.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlstack_core.data.generator import FEATURES
from mlstack_core.model_files import ModelRefused, load_registered_model
from serving import metrics

logger = logging.getLogger(__name__)


class ModelNotReady(RuntimeError):
    """No model can be served yet (no champion in the registry, or the registry is unreachable)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready for the numpy hot path."""

    name: str
    version: str
    run_id: str | None
    alias: str
    estimator: Any
    column_order: tuple[int, ...] | None  # permutation from FEATURES order to the model's, None if identical
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    linear: tuple[np.ndarray, float] | None = None  # (coef in FEATURES order, intercept): see linear_form

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predict rows given in FEATURES order."""
        if self.linear is not None:
            coef, intercept = self.linear
            return features @ coef + intercept
        if self.column_order is not None:
            features = features[:, self.column_order]
        return self.estimator.predict(features)

    def info(self) -> dict[str, Any]:
        """What is served, for responses and /model."""
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "alias": self.alias,
            "loaded_at": self.loaded_at.isoformat(),
        }


def prepare_estimator(model: Any) -> tuple[Any, tuple[int, ...] | None]:
    """Check the model's feature names and return a copy that accepts plain numpy rows.

    The training pipeline is fitted on named columns so the feature order is fixed by name. Serving builds
    numpy rows in FEATURES order (no DataFrame per request), maps them to the model's own order here, once,
    and strips the fitted names so scikit-learn does not warn on every call.
    """
    names = getattr(model, "feature_names_in_", None)
    order: tuple[int, ...] | None = None
    if names is not None:
        names = [str(n) for n in names]
        if sorted(names) != sorted(FEATURES):
            raise ValueError(f"model features {names} do not match the 11 wine features")
        order = tuple(FEATURES.index(n) for n in names)
        if order == tuple(range(len(FEATURES))):
            order = None
    fast = copy.deepcopy(model)
    for step in getattr(fast, "steps", [(None, fast)]):
        estimator = step[1]
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    if hasattr(fast, "feature_names_in_"):
        del fast.feature_names_in_
    return fast, order


def linear_form(model: Any) -> tuple[np.ndarray, float] | None:
    """(coef, intercept) such that predict(X) == X @ coef + intercept for rows in FEATURES order, else None.

    A pipeline of StandardScalers ending in a plain linear regressor is one affine map. Folding it once at load
    time replaces scikit-learn's per-call input checks (about 100 us, the largest cost of a one-row request)
    with a dot product of about 2 us. Any other step or estimator (or a multi-output model) returns None and
    keeps the generic predict; tests compare both on the same rows.
    """
    from sklearn.linear_model import ElasticNet, ElasticNetCV, Lasso, LassoCV, LinearRegression, Ridge, RidgeCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [step for step in steps if step is not None and not (isinstance(step, str) and step == "passthrough")]
    if not steps or type(steps[-1]) not in (ElasticNet, ElasticNetCV, Lasso, LassoCV, LinearRegression, Ridge,
                                            RidgeCV):
        return None
    *transforms, final = steps
    coef = np.asarray(final.coef_, dtype=np.float64)
    intercept_array = np.asarray(final.intercept_, dtype=np.float64)
    if coef.ndim != 1 or coef.shape[0] != len(FEATURES) or intercept_array.size != 1:
        return None
    intercept = float(intercept_array.reshape(()))
    # Innermost step first: a scaler maps x to (x - mean) / scale, so w.z + b = (w / scale).x + b - mean.(w / scale).
    for step in reversed(transforms):
        if type(step) is not StandardScaler:
            return None
        if step.with_std and step.scale_ is not None:
            coef = coef / step.scale_
        if step.with_mean and step.mean_ is not None:
            intercept -= float(np.dot(step.mean_, coef))
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        by_name = dict(zip((str(n) for n in names), coef, strict=True))
        if set(by_name) != set(FEATURES):
            return None
        coef = np.array([by_name[name] for name in FEATURES], dtype=np.float64)
    return coef, intercept


class RegistryClient:
    """The two registry calls serving needs, behind one small seam."""

    def __init__(self, tracking_uri: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def version_for_alias(self, name: str, alias: str) -> tuple[str, str | None] | None:
        """(version, run id) holding the alias, or None when the alias or model does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
                return None
            raise
        return str(mv.version), mv.run_id

    def load(self, name: str, version: str) -> Any:
        """The scikit-learn model of a registered version (skops, allow-listed types only: ModelRefused else)."""
        return load_registered_model(name, version, tracking_uri=self.tracking_uri)

    def drift_reference(self, run_id: str) -> dict[str, Any] | None:
        """The drift reference training logged in a version's run, or None when that run has none."""
        import mlflow.artifacts

        from mlstack_core.drift import REFERENCE_ARTIFACT

        try:
            return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
        except Exception as exc:
            # Older versions (or models registered by hand) have no reference: drift is then not measured.
            logger.info("no drift reference in run %s: %s", run_id, exc)
            return None


class PollLease:
    """Whether this worker is the instance's registry poller: it holds an exclusive ``flock`` on ``path``.

    Taken at the first :meth:`held` that finds it free and kept until :meth:`release` or the process ends (the
    kernel releases it then). When the lock file cannot be opened, every worker polls, as if each held it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._released = False
        self._lock = threading.Lock()  # the watcher and stop() may both release: one close per descriptor

    def held(self) -> bool:
        with self._lock:
            if self._fd is not None:
                return True
            if self._released:
                return False  # stopping: never taken again
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                logger.warning("registry poll lock %s unusable (%s): this worker polls on its own", self.path, exc)
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        """Give the lock up for good (a sibling takes it at its next check)."""
        with self._lock:
            self._released = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)  # closing the last descriptor of the open file releases the lock
                self._fd = None


class ModelStore:
    """Holds the served model and keeps it on the alias's version."""

    MARKER_CHECK_SECONDS = 0.25
    # A worker that does not hold the poll lock asks the registry itself this many poll intervals apart.
    FOLLOWER_POLL_FACTOR = 15

    def __init__(
        self, registry: Any, *, name: str, alias: str, poll_seconds: float, marker: Path
    ) -> None:
        self._registry = registry
        self.name = name
        self.alias = alias
        self.poll_seconds = poll_seconds
        self._marker = marker
        self._model: LoadedModel | None = None
        self.last_error: str | None = None
        self.last_check: dt.datetime | None = None
        # The alias's version when it was refused (not skops, or a type off the allow-list), and why: the previous
        # model keeps serving, and the same version is not downloaded again until the alias moves.
        self.refused: dict[str, str] | None = None
        self._refresh_lock = threading.Lock()
        self._first_check = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease = PollLease(marker.with_name(marker.name + ".poll-lock"))
        metrics.MODEL_VERSION.set(0)
        for outcome in ("success", "failure", "refused"):
            metrics.MODEL_LOADS.labels(outcome)

    @property
    def model(self) -> LoadedModel | None:
        """The model being served (None until a champion exists)."""
        return self._model

    def current(self) -> LoadedModel:
        """The model being served, or ModelNotReady saying why not."""
        model = self._model
        if model is None:
            raise ModelNotReady(
                self.last_error or f"no version of {self.name!r} holds the alias {self.alias!r} yet"
            )
        return model

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the served one; True when a new model was swapped in."""
        try:
            return self._refresh()
        finally:
            self._first_check.set()

    def wait_first_check(self, timeout: float) -> bool:
        """Block until the first registry check (and load) has finished, at most ``timeout`` seconds."""
        return self._first_check.wait(timeout)

    def _refresh(self) -> bool:
        with self._refresh_lock:
            self.last_check = dt.datetime.now(dt.UTC)
            try:
                found = self._registry.version_for_alias(self.name, self.alias)
            except Exception as exc:
                self.last_error = f"model registry unreachable: {type(exc).__name__}"
                logger.warning("registry check failed: %s", exc)
                return False
            if found is None:
                self.last_error = f"no version of {self.name!r} holds the alias {self.alias!r} yet"
                return False
            version, run_id = found
            if self._model is not None and self._model.version == version:
                self.last_error = None
                self.refused = None
                return False
            if self.refused is not None and self.refused["version"] == version:
                return False
            try:
                raw = self._registry.load(self.name, version)
                estimator, order = prepare_estimator(raw)
                linear = linear_form(raw)
            except ModelRefused as exc:
                self._refuse(version, str(exc))
                return False
            except Exception as exc:
                # The public text names the step and the error type only (no hosts, paths or driver text).
                self.last_error = f"could not load version {version}: {type(exc).__name__}"
                logger.exception("loading %s version %s failed", self.name, version)
                metrics.MODEL_LOADS.labels("failure").inc()
                return False
            previous = self._model.version if self._model else None
            self._model = LoadedModel(self.name, version, run_id, self.alias, estimator, order, linear=linear)
            self.last_error = None
            self.refused = None
            metrics.MODEL_LOADS.labels("success").inc()
            metrics.MODEL_VERSION.set(metrics.version_number(version))
            metrics.MODEL_LOADED_AT.set(self._model.loaded_at.timestamp())
            logger.info("now serving %s version %s (was %s)", self.name, version, previous)
            return True

    def _refuse(self, version: str, reason: str) -> None:
        serving = self._model.version if self._model else None
        self.refused = {"version": version, "reason": reason}
        self.last_error = f"version {version} holds {self.alias!r} but was refused: {reason}"
        metrics.MODEL_LOADS.labels("refused").inc()
        logger.error("refused %s version %s (%s); still serving version %s", self.name, version, reason, serving)

    def nudge_all_workers(self) -> None:
        """Make every worker of this instance check the registry now (touches the shared marker)."""
        self._marker.parent.mkdir(parents=True, exist_ok=True)
        self._marker.touch()

    def _marker_mtime(self) -> float:
        try:
            return self._marker.stat().st_mtime_ns
        except OSError:
            return 0

    def start_watching(self) -> None:
        """Start the background thread that follows the alias."""
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher (and hand the poll lock to a sibling)."""
        self._stop.set()
        self._lease.release()

    def _poll_is_mine(self, now: float, last_poll: float) -> bool:
        """Whether this worker asks the registry now that its interval is up (see the module docstring)."""
        if self._model is None or self.last_error is not None:
            return True  # not settled: every worker checks for itself
        if self._lease.held():
            return True
        return now - last_poll >= self.poll_seconds * self.FOLLOWER_POLL_FACTOR

    def _watch(self) -> None:
        seen_marker = self._marker_mtime()
        next_poll = last_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            marker = self._marker_mtime()
            nudged = marker != seen_marker
            if nudged or now >= next_poll:
                seen_marker = marker
                if nudged or self._poll_is_mine(now, last_poll):
                    last_poll = now
                    try:
                        if self.refresh() and not nudged:
                            # This worker saw the new version first: its siblings load it now, not at their
                            # next own check.
                            self.nudge_all_workers()
                            seen_marker = self._marker_mtime()
                    except Exception:
                        # The watcher must outlive any surprise: a dead watcher would leave this worker on an
                        # old version (or on none) while its siblings move on.
                        logger.exception("model watcher: check failed, retrying")
                # While nothing is served yet, keep checking at the marker pace so the first champion
                # is picked up quickly after bootstrap training.
                next_poll = now + (self.poll_seconds if self._model else min(self.poll_seconds, 1.0))
            self._stop.wait(self.MARKER_CHECK_SECONDS)
