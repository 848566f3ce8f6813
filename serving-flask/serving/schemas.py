"""Response models of serving's routes, for its OpenAPI document (routes answer with jsonify)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from mlstack_core.openapi import IndexAnswer
from mlstack_core.row_schemas import DataframeRecords, DataframeSplit, WineRow
from mlstack_core.row_schemas import RowsPayload as PredictBody

__all__ = [
    "CountAnswer", "DummyAnswer", "InvocationsAnswer", "InvocationsBody", "LatestDataAnswer", "LatestRowsAnswer",
    "LengthDataAnswer", "ModelInfo", "ModelStatusAnswer", "PredictAnswer", "PredictBody", "ReloadAnswer",
    "ServingIndex", "TestAnswer", "WineRow",
]


class ModelInfo(BaseModel):
    """The model version that answered (LoadedModel.info)."""

    name: str
    version: str
    run_id: str | None
    alias: str
    loaded_at: str


class PredictAnswer(BaseModel):
    """``prediction`` for one row object, ``predictions`` for a batch; ``stored`` only for row-id requests."""

    model: ModelInfo
    request_id: str
    prediction: float | None = Field(None, examples=[5.9])
    predictions: list[float] | None = None
    stored: int | None = Field(None, description="rows whose prediction is in MongoDB now (row-id requests)")


class CountAnswer(BaseModel):
    """``/data/count``: rows stored and rows still waiting for a prediction."""

    count: int = Field(examples=[4898])
    pending: int = Field(examples=[0])


class LengthDataAnswer(CountAnswer):
    """The original ``/getLengthData/``: ``lengthData`` (= ``count``), with ``count`` and ``pending`` beside it."""

    lengthData: int = Field(examples=[4898])


class InvocationsAnswer(BaseModel):
    """``/invocations`` (MLflow's scoring protocol): one prediction per row, in order."""

    predictions: list[float] = Field(examples=[[5.9, 6.1]])


class Instances(BaseModel):
    """TF-serving style ``instances``: a list of row objects, or one object mapping each feature to a list."""

    instances: list[WineRow] | dict[str, list[float]] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=10_000)
    params: dict[str, Any] | None = Field(None, description="accepted and ignored, as MLflow does for sklearn")


class Inputs(BaseModel):
    """TF-serving style ``inputs``: as ``instances``."""

    inputs: list[WineRow] | dict[str, list[float]] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=10_000)
    params: dict[str, Any] | None = Field(None, description="accepted and ignored, as MLflow does for sklearn")


class InvocationsBody(RootModel[DataframeSplit | DataframeRecords | Instances | Inputs]):
    """Exactly one of MLflow's JSON input formats (``text/csv`` with a header line is accepted too)."""


class ServingIndex(IndexAnswer):
    """``GET /`` of serving: the model served and the feature names a row needs."""

    model: ModelInfo | None
    features: list[str]


class ModelStatusAnswer(BaseModel):
    """``/model``: the model this worker serves and how it follows the registry alias."""

    model: ModelInfo | None
    alias: str
    name: str
    last_check: str | None
    last_error: str | None
    refused: dict[str, str] | None = Field(description="the alias's version this worker refused to load, and why")
    poll_seconds: float


class ReloadAnswer(BaseModel):
    """``/model/reload``: whether the version changed, and the model served now."""

    reloaded: bool
    model: ModelInfo


class StoredRow(BaseModel):
    """A stored row as clients see it: its id, the 11 features, quality, and its prediction when there is one."""

    model_config = ConfigDict(extra="allow")
    id: str
    prediction_status: str | None = Field(None, examples=["done"])
    prediction: float | None = None


class LatestRowsAnswer(BaseModel):
    """``/data/latest``: the newest rows first."""

    rows: list[StoredRow]


class LatestDataAnswer(RootModel[dict[str, StoredRow]]):
    """The original ``/getLatestData/``: the newest rows keyed by their position in the collection."""


class DummyAnswer(BaseModel):
    """The original ``/predictDummy/``: ``modelInfo`` (in words) and ``result`` (the prediction)."""

    modelInfo: str = Field(examples=["sk-learn-linear-reg-model version 3 (champion)"])
    result: float
    model: ModelInfo


class TestAnswer(BaseModel):
    """The original ``/predictTestMLFlow/``: ``modelInfo`` and ``result`` (predictions as text), with the error."""

    modelInfo: str
    result: str = Field(description="the predictions as the original's text, e.g. '[5.9, 6.1]'")
    model: ModelInfo
    rows: int
    mae: float
    predictions: list[float]
    quality: list[int]
