"""Pydantic models of the row bodies, for the OpenAPI documents only.

Rows are validated by mlstack_core.validation (numpy on the hot path, every problem named); these models
describe the same shapes and bounds to clients and are never used to validate a request.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from mlstack_core.data.generator import BOUNDS, FEATURES, TARGET

EXAMPLE_ROW = {"fixed acidity": 7.0, "volatile acidity": 0.27, "citric acid": 0.36, "residual sugar": 20.7,
               "chlorides": 0.045, "free sulfur dioxide": 45.0, "total sulfur dioxide": 170.0, "density": 1.001,
               "pH": 3.0, "sulphates": 0.45, "alcohol": 8.8}

WineRow = create_model(
    "WineRow",
    __config__=ConfigDict(
        populate_by_name=True, extra="forbid",
        json_schema_extra={"description": "One row: the 11 features by name ('fixed_acidity' is accepted too), "
                                          "any key order; quality optional.", "examples": [EXAMPLE_ROW]},
    ),
    **{name.replace(" ", "_"): (float, Field(alias=name, ge=BOUNDS[name][0], le=BOUNDS[name][1]))
       for name in FEATURES},
    **{TARGET: (int | None, Field(None, ge=BOUNDS[TARGET][0], le=BOUNDS[TARGET][1],
                                  description="ground truth; kept only from the ETL's service token"))},
)


class RowsBody(BaseModel):
    """``{"rows": [...]}``, with ``ids`` (one per row) from the ETL's service token only."""

    rows: list[WineRow] = Field(min_length=1, max_length=10_000)  # type: ignore[valid-type]
    ids: list[str] | None = Field(None, description="row ids (SERVICE_TOKEN only): stored before the answer")


class DataframeRecords(BaseModel):
    """MLflow's ``dataframe_records``."""

    dataframe_records: list[WineRow] = Field(min_length=1, max_length=10_000)  # type: ignore[valid-type]


class DataframeSplit(BaseModel):
    """MLflow's ``dataframe_split``: column names and rows of values."""

    model_config = ConfigDict(json_schema_extra={
        "examples": [{"dataframe_split": {"columns": list(EXAMPLE_ROW), "data": [list(EXAMPLE_ROW.values())]}}]})

    class Split(BaseModel):
        columns: list[str]
        data: list[list[float]] = Field(min_length=1, max_length=10_000)
        index: list[Any] | None = None

    dataframe_split: Split


RowList = Annotated[list[WineRow], Field(min_length=1, max_length=10_000)]  # type: ignore[valid-type]


class RowsPayload(RootModel[WineRow | RowList | RowsBody | DataframeRecords | DataframeSplit]):  # type: ignore[valid-type]
    """One row object, a list of rows, ``{"rows": [...]}``, ``dataframe_records`` or ``dataframe_split``."""
