"""Typed settings shared by every service, validated once at start-up.

Each service subclasses :class:`BaseServiceSettings` and builds it in its app factory with
:func:`load_settings`. The original template's environment names (``HOSTDBEXT``, ``PASSWORDDBEXT``...) are
accepted as aliases so existing ``.env`` files keep working.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote_plus, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack_core.predictions import PREDICTIONS_COLLECTION
from mlstack_core.registry_calls import configure_http

# Values people leave in .env files by accident; a stack must never start with them.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "secret", "password", "admin", "token", "example", "xxx", "test"}
)
MIN_ADMIN_TOKEN_LENGTH = 16


class SettingsError(RuntimeError):
    """Raised when the environment does not describe a valid configuration; names the variables."""


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class BaseServiceSettings(BaseSettings):
    """Settings every service needs: identity, logging, admin token, MongoDB, local state."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    service_name: str = "service"
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    log_config: Path | None = Field(None, validation_alias=_env("LOG_CONFIG"))
    log_dir: Path = Field(Path("logs"), validation_alias=_env("LOG_DIR"))
    # plain for people, json (one object per line, request id as a field) for log shippers.
    log_format: Literal["plain", "json"] = Field("plain", validation_alias=_env("LOG_FORMAT"))
    # false: stdout only (containers, where a file in the image layer is held by no volume).
    log_file: bool = Field(True, validation_alias=_env("LOG_FILE"))
    state_dir: Path = Field(Path("/tmp/mlstack-state"), validation_alias=_env("STATE_DIR"))  # noqa: S108

    admin_token: SecretStr = Field(validation_alias=_env("ADMIN_TOKEN"))

    mongo_uri: SecretStr | None = Field(None, validation_alias=_env("MONGO_URI"))
    mongo_host: str = Field("localhost", validation_alias=_env("MONGO_HOST", "HOSTDBEXT"))
    mongo_port: int = Field(27017, ge=1, le=65535, validation_alias=_env("MONGO_PORT", "PORTDBEXT"))
    mongo_username: str | None = Field(
        None, validation_alias=_env("MONGO_USERNAME", "USERNAMEDBEXT", "MONGO_INITDB_ROOT_USERNAME")
    )
    mongo_password: SecretStr | None = Field(
        None, validation_alias=_env("MONGO_PASSWORD", "PASSWORDDBEXT", "MONGO_INITDB_ROOT_PASSWORD")
    )
    mongo_db: str = Field("DUMMY", min_length=1, validation_alias=_env("MONGO_DB"))
    mongo_collection: str = Field("dummy_col_demo", min_length=1, validation_alias=_env("MONGO_COLLECTION"))
    # Fail fast: a down database must cost seconds, not pymongo's 30 s default server selection.
    mongo_timeout_ms: int = Field(2000, ge=100, le=60000, validation_alias=_env("MONGO_TIMEOUT_MS"))

    # OpenTelemetry traces (mlstack_core.tracing): off unless OTEL_TRACES_ENABLED=true; off, nothing is installed.
    # The other names are OpenTelemetry's own; the SDK reads the rest (OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS,
    # OTEL_RESOURCE_ATTRIBUTES...) itself.
    otel_traces_enabled: bool = Field(False, validation_alias=_env("OTEL_TRACES_ENABLED"))
    otel_sdk_disabled: bool = Field(False, validation_alias=_env("OTEL_SDK_DISABLED"))
    otel_service_name: str | None = Field(None, min_length=1, validation_alias=_env("OTEL_SERVICE_NAME"))
    # OTLP over HTTP (port 4318); the gRPC exporter is not installed.
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        "http/protobuf", validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    otel_exporter_otlp_endpoint: str = Field(
        "http://localhost:4318", validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    # A full URL (.../v1/traces) that wins over OTEL_EXPORTER_OTLP_ENDPOINT, as the specification says.
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    otel_traces_sampler: Literal[
        "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
        "parentbased_traceidratio",
    ] = Field("parentbased_always_on", validation_alias=_env("OTEL_TRACES_SAMPLER"))
    otel_traces_sampler_arg: float = Field(1.0, ge=0, le=1, validation_alias=_env("OTEL_TRACES_SAMPLER_ARG"))

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL such as http://jaeger:4318")
        return value

    @property
    def tracing_enabled(self) -> bool:
        """Whether this process exports traces (OTEL_TRACES_ENABLED, unless OTEL_SDK_DISABLED)."""
        return self.otel_traces_enabled and not self.otel_sdk_disabled

    def otlp_traces_url(self) -> str:
        """Where spans are posted: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else the base endpoint + /v1/traces."""
        return self.otel_exporter_otlp_traces_endpoint or f"{self.otel_exporter_otlp_endpoint.rstrip('/')}/v1/traces"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        return _strong_secret(value)

    @field_validator("mongo_password")
    @classmethod
    def _no_placeholder_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder; set the real database password")
        return value

    def mongo_connection_uri(self) -> str:
        """The MongoDB URI: MONGO_URI when given, else built from host, port and credentials."""
        if self.mongo_uri is not None:
            return self.mongo_uri.get_secret_value()
        credentials = ""
        if self.mongo_username and self.mongo_password is not None:
            credentials = (
                f"{quote_plus(self.mongo_username)}:{quote_plus(self.mongo_password.get_secret_value())}@"
            )
        return f"mongodb://{credentials}{self.mongo_host}:{self.mongo_port}/"


def _strong_secret(value: SecretStr) -> SecretStr:
    token = value.get_secret_value()
    if token.strip().lower() in PLACEHOLDER_SECRETS or len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"must be a real secret of at least {MIN_ADMIN_TOKEN_LENGTH} characters, not a placeholder "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


class DataPathSettings(BaseServiceSettings):
    """What the two services on the data path share: ETL forwards rows to serving, serving stores predictions.

    ``SERVICE_TOKEN`` is the ETL's identity towards serving: only a caller presenting it may send row ``ids``
    and ground-truth ``quality`` to /predict. It must differ from ``ADMIN_TOKEN``, so neither role holds the
    other's power.
    """

    service_token: SecretStr = Field(validation_alias=_env("SERVICE_TOKEN"))
    predictions_collection: str = Field(
        PREDICTIONS_COLLECTION, min_length=1, validation_alias=_env("PREDICTIONS_COLLECTION")
    )

    @field_validator("service_token")
    @classmethod
    def _strong_service_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        admin = info.data.get("admin_token")  # validated before (declared earlier); absent when it was invalid
        if admin is not None and hmac.compare_digest(value.get_secret_value(), admin.get_secret_value()):
            raise ValueError("must differ from ADMIN_TOKEN (each role gets its own secret)")
        return _strong_secret(value)


class RegistryClientSettings(BaseSettings):
    """What a service that talks to the model registry (MLflow) needs: where it is, how long a call may take, and
    whom it logs in as.

    MLflow's basic auth gives each service its own user (training may write, serving only read). The credentials
    use MLflow's own variable names; :meth:`configure_registry_client` hands them to MLflow's client, which
    reads only its environment. Both are unset for a registry without auth, never half set.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    mlflow_tracking_uri: str = Field("http://mlflow:5000", validation_alias=_env("MLFLOW_TRACKING_URI"))
    # A request worker's MLflow calls: this long each, no retry; a read for a client gives up after it (see
    # mlstack_core.registry_calls). Keep it well below Nginx's and Gunicorn's timeouts (30 s, 60 s).
    registry_request_seconds: float = Field(3.0, gt=0, le=20, validation_alias=_env("REGISTRY_REQUEST_SECONDS"))
    # How long a worker answers registry reads (e.g. GET /model on training) from its last answer.
    registry_cache_seconds: float = Field(5.0, ge=0, le=3600, validation_alias=_env("REGISTRY_CACHE_SECONDS"))
    mlflow_tracking_username: str | None = Field(
        None, min_length=1, validation_alias=_env("MLFLOW_TRACKING_USERNAME")
    )
    mlflow_tracking_password: SecretStr | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_PASSWORD"))

    @field_validator("mlflow_tracking_password")
    @classmethod
    def _registry_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("mlflow_tracking_username"):
                raise ValueError("is required when MLFLOW_TRACKING_USERNAME is set")
            return None
        if not info.data.get("mlflow_tracking_username"):
            raise ValueError("is set but MLFLOW_TRACKING_USERNAME is not")
        return _strong_secret(value)

    def configure_registry_client(self) -> None:
        """Set this process's MLflow client up: per-call time limits, the registry user, MLflow's loaders closed.

        The client reads its environment per call, so this is the one place the apps configure it.
        """
        configure_http(self.registry_request_seconds)
        # Models load through mlstack_core.model_files (skops, allow-listed types); MLflow's own loaders stay shut.
        os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        if self.mlflow_tracking_username and self.mlflow_tracking_password is not None:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.mlflow_tracking_username
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_tracking_password.get_secret_value()


S = TypeVar("S", bound=BaseServiceSettings)

# Field name -> the environment variable people should set, for error messages.
def _variable_name(settings_cls: type[BaseSettings], field: str) -> str:
    info = settings_cls.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    choices = getattr(alias, "choices", None)
    if choices:
        return " / ".join(str(c) for c in choices)
    return field.upper()


def load_settings(settings_cls: type[S], overrides: dict[str, Any] | None = None) -> S:
    """Build settings from the environment (and test overrides), raising SettingsError naming bad variables."""
    try:
        return settings_cls(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "is required but not set"
            problems.append(f"{_variable_name(settings_cls, field)}: {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
