"""Response models of serving's routes, for its OpenAPI document (routes answer with jsonify)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlstack_core.row_schemas import RowsPayload as PredictBody

__all__ = ["CountAnswer", "InvocationsAnswer", "LengthDataAnswer", "ModelInfo", "PredictAnswer", "PredictBody"]


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
