"""Settings of the serving service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from mlstack_core.settings import DataPathSettings, RegistryClientSettings


class ServingSettings(DataPathSettings, RegistryClientSettings):
    """Serving: where the registry is, which model and alias to serve, how predictions are stored."""

    service_name: str = "serving"
    model_name: str = Field("sk-learn-linear-reg-model", min_length=1, validation_alias=AliasChoices("MODEL_NAME"))
    model_alias: str = Field("champion", min_length=1, validation_alias=AliasChoices("MODEL_ALIAS"))
    # Every worker asks the registry this often which version holds the alias; this bounds how long a
    # promotion takes to reach every worker when nobody calls the reload endpoint.
    model_poll_seconds: float = Field(2.0, ge=0.5, le=3600, validation_alias=AliasChoices("MODEL_POLL_SECONDS"))
    model_watch: bool = Field(True, validation_alias=AliasChoices("MODEL_WATCH"))
    # A starting worker waits this long for its first registry check and load before it takes requests, so a
    # restarted worker does not answer 503 while its siblings serve (Gunicorn kills a worker silent for
    # GUNICORN_TIMEOUT, 60 s by default: keep this well below).
    model_startup_wait_seconds: float = Field(
        20, ge=0, le=45, validation_alias=AliasChoices("MODEL_STARTUP_WAIT_SECONDS")
    )
    prediction_flush_seconds: float = Field(
        0.5, ge=0.05, le=60, validation_alias=AliasChoices("PREDICTION_FLUSH_SECONDS")
    )
    prediction_buffer_max: int = Field(
        100_000, ge=100, le=10_000_000, validation_alias=AliasChoices("PREDICTION_BUFFER_MAX")
    )
    # The ETL's row-id predictions are written before the answer; one write gets at most this long, then the
    # answer is a 503 and the rows stay pending. Keep it below the ETL's PREDICT_TIMEOUT_SECONDS (10 s).
    prediction_store_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=AliasChoices("PREDICTION_STORE_TIMEOUT_SECONDS")
    )
    # Anonymous (data-plane) predictions only: the ETL's row-id predictions are stored whatever this says.
    store_predictions: bool = Field(True, validation_alias=AliasChoices("STORE_PREDICTIONS"))
    seed_rows: int = Field(500, ge=0, le=1_000_000, validation_alias=AliasChoices("SEED_ROWS"))
    # Quality monitor (drift, live MAE, data size), run by one worker; see serving/quality.py.
    monitor_enabled: bool = Field(True, validation_alias=AliasChoices("MONITOR_ENABLED"))
    monitor_interval_seconds: float = Field(
        60, ge=1, le=86400, validation_alias=AliasChoices("MONITOR_INTERVAL_SECONDS")
    )
    drift_window_rows: int = Field(1000, ge=10, le=100_000, validation_alias=AliasChoices("DRIFT_WINDOW_ROWS"))
    # PSI over fewer rows is mostly sampling noise (about 9 / rows with 10 bins): publish nothing below this.
    drift_min_rows: int = Field(100, ge=10, le=100_000, validation_alias=AliasChoices("DRIFT_MIN_ROWS"))
    live_mae_window_rows: int = Field(
        1000, ge=1, le=100_000, validation_alias=AliasChoices("LIVE_MAE_WINDOW_ROWS")
    )
