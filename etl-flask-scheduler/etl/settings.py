"""Settings of the ETL service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from mlstack_core.settings import DataPathSettings


class EtlSettings(DataPathSettings):
    """ETL: schedule, batch size, and where serving's batch predict endpoint is."""

    service_name: str = "etl"
    # The original template's name: the URL rows are forwarded to for prediction (serving's /predict).
    predict_api: str = Field("http://serving-nginx/predict", validation_alias=AliasChoices("PREDICTAPI"))
    etl_interval_seconds: int = Field(300, ge=5, le=7 * 86400, validation_alias=AliasChoices("ETL_INTERVAL_SECONDS"))
    etl_batch_size: int = Field(1, ge=1, le=10_000, validation_alias=AliasChoices("ETL_BATCH_SIZE"))
    # Rows left unpredicted by earlier runs (serving down) sent along with each run, oldest first.
    backfill_limit: int = Field(1000, ge=0, le=10_000, validation_alias=AliasChoices("ETL_BACKFILL_LIMIT"))
    predict_timeout_seconds: float = Field(
        10.0, gt=0, le=120, validation_alias=AliasChoices("PREDICT_TIMEOUT_SECONDS")
    )
    predict_retries: int = Field(2, ge=0, le=5, validation_alias=AliasChoices("PREDICT_RETRIES"))
    scheduler_enabled: bool = Field(True, validation_alias=AliasChoices("SCHEDULER_ENABLED"))
    # Rows per run the orphan sweep checks for "neither pending nor predicted" (0: no sweep); see rows.sweep.
    sweep_rows: int = Field(1000, ge=0, le=100_000, validation_alias=AliasChoices("ETL_SWEEP_ROWS"))
    max_ingest_rows: int = Field(10_000, ge=1, le=100_000, validation_alias=AliasChoices("MAX_INGEST_ROWS"))
