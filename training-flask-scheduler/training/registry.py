"""Everything training asks of the MLflow tracking server and model registry, in one place.

Artifacts go through the tracking server (``--serve-artifacts``): model URIs are ``mlflow-artifacts:/...``
and this service needs no S3 credentials, also to delete a version's files. MLflow 3 stores a model as a
*logged model* outside the run's folder (``mlflow-artifacts:/<experiment>/models/<model_id>/artifacts``); a
version's ``source`` is ``models:/<model_id>``, so the files are located through the registry
(``get_model_version_download_uri``), never guessed from the run id.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import requests

from mlstack_core.model_files import load_registered_model

logger = logging.getLogger(__name__)

# The registry answers these when a model or an alias does not exist (anything else is a real failure).
_MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
REGISTRATION_WAIT_SECONDS = 60
PING_TIMEOUT_SECONDS = 2.0


class RegistryError(RuntimeError):
    """The tracking server failed or could not be reached; the message says during which step."""


@dataclass(frozen=True)
class Version:
    """A registered model version, as much as training needs of it."""

    version: str
    run_id: str | None
    source: str
    created_at: dt.datetime
    tags: dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """What one training run registered."""

    version: str
    mlflow_run_id: str
    model_uri: str


class ModelRegistry:
    """The model's versions and aliases in the MLflow registry of one tracking server."""

    def __init__(self, tracking_uri: str, *, model_name: str, experiment_name: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.experiment_name = experiment_name
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ------------------------------------------------------------------ health

    def ping(self) -> tuple[bool, str]:
        """Readiness: the tracking server answers /health within a short timeout."""
        try:
            response = requests.get(f"{self.tracking_uri.rstrip('/')}/health", timeout=PING_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            return False, f"unreachable: {type(exc).__name__}"
        return response.status_code == 200, f"HTTP {response.status_code}"

    # ------------------------------------------------------------------ aliases

    def version_for_alias(self, alias: str) -> Version | None:
        """The version holding an alias, or None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return None
            raise
        return _version(mv)

    def aliases(self) -> dict[str, str]:
        """Every alias of the model and the version it points to (empty when the model does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self._client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def set_alias(self, alias: str, version: str) -> None:
        """Point an alias at a version."""
        self._client.set_registered_model_alias(self.model_name, alias, version)

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a version."""
        for key, value in tags.items():
            self._client.set_model_version_tag(self.model_name, version, key, value)

    # ------------------------------------------------------------------ training

    def log_candidate(
        self,
        model: Any,
        *,
        input_example: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        run_name: str,
        artifacts: dict[str, dict[str, Any]] | None = None,
    ) -> Candidate:
        """Log params, metrics, JSON artifacts and the model (signature, input example) in a run; register it."""
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        # The fluent API reads the process-wide URI; set it here so this registry's server is the one used.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment_id = self._experiment_id()
        signature = infer_signature(input_example, model.predict(input_example))
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            for artifact_file, content in (artifacts or {}).items():
                mlflow.log_dict(content, artifact_file)
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=input_example,
                registered_model_name=self.model_name,
                await_registration_for=REGISTRATION_WAIT_SECONDS,
                # skops, not pickle: loading a model must never execute code from the artifact store.
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                # Explicit requirements skip MLflow's inference, which imports the model in a subprocess.
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            )
        if info.registered_model_version is None:
            raise RegistryError("the model was logged but no registry version was created")
        return Candidate(str(info.registered_model_version), run.info.run_id, info.model_uri)

    def load(self, version: str) -> Any:
        """The scikit-learn model of a version (skops, allow-listed types only: ModelRefused else)."""
        return load_registered_model(self.model_name, version, tracking_uri=self.tracking_uri)

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self._client.create_experiment(self.experiment_name)
        except MlflowException:
            # Another replica created it between our two calls.
            experiment = self._client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # ------------------------------------------------------------------ retention

    def versions(self) -> list[Version]:
        """Every version of the model, newest first."""
        found: list[Version] = []
        page_token = None
        while True:
            page = self._client.search_model_versions(
                f"name = '{_quoted(self.model_name)}'", max_results=1000, page_token=page_token
            )
            found.extend(_version(mv) for mv in page)
            page_token = page.token
            if not page_token:
                break
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def artifact_uri(self, version: str) -> str:
        """Where a version's files are (resolved by the registry: a logged model's artifact location)."""
        return self._client.get_model_version_download_uri(self.model_name, version)

    def delete_version(self, version: Version) -> str:
        """Delete a version's files in the artifact store (through the server), then the version; returns the URI.

        Files first: if deleting them fails, the version is still listed and the next retention pass tries both
        again (deleting files already gone is a no-op). The other order would leave files nobody can find.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = self.artifact_uri(version.version)
        _check_deletable(uri)
        repo = get_artifact_repository(uri, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        repo.delete_artifacts()
        self._client.delete_model_version(self.model_name, version.version)
        if version.source.startswith("models:/m-"):
            # The logged model entity would otherwise still list the deleted files (metadata only: a failure
            # here leaves no files behind, so it is logged, not raised).
            try:
                self._client.delete_logged_model(version.source.removeprefix("models:/"))
            except MlflowException as exc:
                logger.warning("version %s deleted, its logged model entity not: %s", version.version, exc)
        return uri


    # ------------------------------------------------------------------ promotion safety

    def files_gone(self, version: str) -> bool:
        """True only when the registry says the version's model files are not there (no MLmodel where they were).

        Raises whatever the registry or the artifact store raise: an error is never taken for "gone".
        """
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            uri = self.artifact_uri(version)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return True
            raise
        repo = get_artifact_repository(uri, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return not any(item.path.rsplit("/", 1)[-1] == "MLmodel" for item in repo.list_artifacts())

    def data_source(self, version: Version) -> str | None:
        """Which rows a version was trained on (its run's ``data.source`` tag), None when that is unknown."""
        if not version.run_id:
            return None
        try:
            return self._client.get_run(version.run_id).data.tags.get("data.source")
        except Exception as exc:
            logger.warning("data source of version %s unknown: %s", version.version, exc)
            return None

def _check_deletable(uri: str) -> None:
    # The server deletes everything under the path it is given: refuse anything that is not a model's own folder
    # behind the tracking server (other schemes would need storage credentials this service does not have).
    parsed = urlparse(uri)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "mlflow-artifacts" or len(parts) < 3:
        raise RegistryError(f"refusing to delete artifacts at {uri!r}: not a model version's own folder")


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def _version(mv: Any) -> Version:
    created = dt.datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=dt.UTC)
    return Version(str(mv.version), mv.run_id, mv.source or "", created, dict(mv.tags or {}))
