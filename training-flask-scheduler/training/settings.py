"""Settings of the training service."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from mlstack_core.settings import BaseServiceSettings, RegistryClientSettings


class TrainingSettings(BaseServiceSettings, RegistryClientSettings):
    """Training: schedule, data, model hyper-parameters, registry, promotion rule, retention, serving nudge."""

    service_name: str = "training"
    scheduler_enabled: bool = Field(True, validation_alias=AliasChoices("SCHEDULER_ENABLED"))
    training_interval_seconds: int = Field(
        3600, ge=5, le=7 * 86400, validation_alias=AliasChoices("TRAINING_INTERVAL_SECONDS")
    )
    # A fresh stack has no champion: the leader trains at start so serving has a model without a manual step.
    bootstrap_enabled: bool = Field(True, validation_alias=AliasChoices("TRAINING_BOOTSTRAP"))
    bootstrap_timeout_seconds: float = Field(
        600, ge=10, le=3600, validation_alias=AliasChoices("TRAINING_BOOTSTRAP_TIMEOUT_SECONDS")
    )
    # Renewed every ttl/3 while a run holds it, so a holder that died frees it within this time.
    lease_ttl_seconds: float = Field(30, ge=3, le=3600, validation_alias=AliasChoices("TRAINING_LEASE_TTL_SECONDS"))

    # Data
    min_training_rows: int = Field(50, ge=10, le=10_000_000, validation_alias=AliasChoices("MIN_TRAINING_ROWS"))
    fallback_rows: int = Field(5000, ge=50, le=1_000_000, validation_alias=AliasChoices("FALLBACK_ROWS"))
    # Server-side limit on the full-collection read, so a huge or stuck read cannot hold the run forever.
    read_timeout_seconds: float = Field(
        300, ge=1, le=3600, validation_alias=AliasChoices("TRAINING_READ_TIMEOUT_SECONDS")
    )

    # Model (the original template's ElasticNet and hyper-parameters)
    alpha: float = Field(0.5, ge=0, le=1000, validation_alias=AliasChoices("TRAINING_ALPHA", "ALPHA"))
    l1_ratio: float = Field(0.01, ge=0, le=1, validation_alias=AliasChoices("TRAINING_L1_RATIO", "L1_RATIO"))
    standardize: bool = Field(False, validation_alias=AliasChoices("TRAINING_STANDARDIZE"))
    holdout_fraction: float = Field(
        0.2, gt=0, lt=0.9, validation_alias=AliasChoices("TRAINING_HOLDOUT_FRACTION", "HOLDOUT_FRACTION")
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, validation_alias=AliasChoices("TRAINING_SEED"))

    # Registry
    mlflow_experiment_name: str = Field(
        "wine-quality", min_length=1, validation_alias=AliasChoices("MLFLOW_EXPERIMENT_NAME")
    )
    model_name: str = Field("sk-learn-linear-reg-model", min_length=1, validation_alias=AliasChoices("MODEL_NAME"))

    # Promotion: the challenger replaces the champion when it is better by MORE than the margin (see README).
    promotion_metric: Literal["mae", "rmse", "r2"] = Field("mae", validation_alias=AliasChoices("PROMOTION_METRIC"))
    promotion_min_improvement: float = Field(
        0.0, ge=0, le=1e6, validation_alias=AliasChoices("PROMOTION_MIN_IMPROVEMENT")
    )
    promotion_improvement_mode: Literal["absolute", "relative"] = Field(
        "absolute", validation_alias=AliasChoices("PROMOTION_IMPROVEMENT_MODE")
    )
    # Off: a challenger trained on generated rows (MongoDB down or too few rows) never replaces a champion trained
    # on database rows. On: it is compared by the metric like any other.
    promotion_allow_generated_over_real: bool = Field(
        False, validation_alias=AliasChoices("PROMOTION_ALLOW_GENERATED_OVER_REAL")
    )
    promotions_collection: str = Field(
        "promotions", min_length=1, validation_alias=AliasChoices("PROMOTIONS_COLLECTION")
    )

    # Retention
    retention_keep_versions: int = Field(10, ge=1, le=10_000, validation_alias=AliasChoices("RETENTION_KEEP_VERSIONS"))
    retention_max_age_days: float = Field(0, ge=0, le=36500, validation_alias=AliasChoices("RETENTION_MAX_AGE_DAYS"))

    # Serving nudge (the original template's LOADMODELAPI)
    load_model_api: str = Field("http://serving-nginx/loadModel/", validation_alias=AliasChoices("LOADMODELAPI"))
    serving_admin_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SERVING_ADMIN_TOKEN"))
    # Serving loads the model inside the reload request: allow for that, but never wait longer than this.
    serving_nudge_timeout_seconds: float = Field(
        15, gt=0, le=120, validation_alias=AliasChoices("SERVING_NUDGE_TIMEOUT_SECONDS")
    )
    serving_nudge_retries: int = Field(1, ge=0, le=5, validation_alias=AliasChoices("SERVING_NUDGE_RETRIES"))

    def serving_token(self) -> str:
        """The token for serving's reload endpoint: SERVING_ADMIN_TOKEN, else this service's ADMIN_TOKEN."""
        token = self.serving_admin_token or self.admin_token
        return token.get_secret_value()
