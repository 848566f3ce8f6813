"""The promotion rule (pure), and the record of every decision in MongoDB ``promotions``.

Rule: the challenger becomes champion when, on this run's holdout rows, it beats the champion on
PROMOTION_METRIC by MORE than PROMOTION_MIN_IMPROVEMENT. The improvement is measured in the metric's
direction (lower is better for mae and rmse, higher for r2), either in the metric's units ("absolute") or as a
fraction of the champion's value ("relative"). With the default margin 0 the challenger must be strictly better:
a tie keeps the champion, so retraining on unchanged data does not churn versions or reload serving.

Two safety rules come first. A challenger trained on generated rows (MongoDB down or too few rows) never
replaces a champion trained on database rows, or one whose data source is unknown, unless
PROMOTION_ALLOW_GENERATED_OVER_REAL is set. A champion that cannot be scored is replaced only when its files are
definitively gone (the registry lists no MLmodel for it) or the loader refuses it (not skops, a type off
the allow-list); any other failure (registry or artifact store down,
a load error) keeps it, because a passing outage must not decide who serves.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from mlstack_core.mongo import public_doc
from training.data import SOURCE_GENERATED

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = {"mae": True, "rmse": True, "r2": False}
PROMOTED = "promoted"
REJECTED = "rejected"
ROLLBACK = "rollback"


@dataclass(frozen=True)
class PromotionRule:
    """Which metric decides, and by how much the challenger must win."""

    metric: Literal["mae", "rmse", "r2"] = "mae"
    min_improvement: float = 0.0
    mode: Literal["absolute", "relative"] = "absolute"
    allow_generated_over_real: bool = False

    def improvement(self, challenger: float, champion: float) -> float:
        """How much better the challenger is (positive: better), in metric units or relative to the champion."""
        gain = champion - challenger if LOWER_IS_BETTER[self.metric] else challenger - champion
        if self.mode == "relative":
            # A champion scoring exactly 0 would divide by zero; any gain over it is then "infinitely" relative.
            return gain / max(abs(champion), 1e-12)
        return gain

    def describe(self) -> str:
        """The rule in words, for reasons and the README."""
        direction = "lower" if LOWER_IS_BETTER[self.metric] else "higher"
        unit = "" if self.mode == "absolute" else " (relative to the champion)"
        rule = f"{self.metric} ({direction} is better) must improve by more than {self.min_improvement:g}{unit}"
        if not self.allow_generated_over_real:
            rule += "; a model trained on generated rows never replaces one trained on database rows"
        return rule


@dataclass(frozen=True)
class Decision:
    """Whether the challenger is promoted, why, and by how much it won or lost."""

    promote: bool
    reason: str
    improvement: float | None = None


def decide(
    rule: PromotionRule,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    *,
    champion_version: str | None = None,
    champion_error: str | None = None,
    champion_gone: bool = False,
    challenger_source: str | None = None,
    champion_source: str | None = None,
) -> Decision:
    """Apply the rule to the challenger's and the champion's metrics on the same holdout rows."""
    metric = rule.metric
    value = challenger[metric]
    if not math.isfinite(value):
        return Decision(False, f"challenger {metric} is not a finite number ({value}); champion kept")
    if champion_version is None:
        return Decision(True, "no champion yet: the first model becomes champion")
    generated_over_real = challenger_source == SOURCE_GENERATED and champion_source != SOURCE_GENERATED
    if generated_over_real and not rule.allow_generated_over_real:
        trained_on = "database rows" if champion_source else "rows of unknown source"
        return Decision(
            False, f"challenger trained on generated rows; champion version {champion_version} trained on "
            f"{trained_on} is kept (PROMOTION_ALLOW_GENERATED_OVER_REAL is off)",
        )
    if champion is None:
        if champion_gone:
            # Serving cannot load it either; the version stays as previous_champion for the record.
            return Decision(
                True, f"champion version {champion_version} cannot be used ({champion_error}); "
                "replaced by the challenger",
            )
        return Decision(
            False, f"champion version {champion_version} could not be scored on this holdout ({champion_error}) "
            "but its files are not known to be gone or refused; champion kept",
        )
    gain = rule.improvement(value, champion[metric])
    comparison = (
        f"challenger {metric} {value:.6g} vs champion (version {champion_version}) {champion[metric]:.6g}: "
        f"improvement {gain:.6g}"
    )
    if gain > rule.min_improvement:
        return Decision(True, f"{comparison} > required {rule.min_improvement:g} ({rule.mode})", gain)
    return Decision(False, f"{comparison} not more than required {rule.min_improvement:g} ({rule.mode})", gain)


def version_tags(record: dict[str, Any]) -> dict[str, str]:
    """A decision as a few model-version tags (``promotion.*``); each tag is one registry write."""
    tags = {
        "promotion.outcome": record["outcome"],
        "promotion.reason": record["reason"],
        "promotion.decided_at": record["decided_at"].isoformat(),
    }
    for key in ("metric", "champion_version", "previous_champion_version"):
        if record.get(key) is not None:
            tags[f"promotion.{key}"] = str(record[key])
    for key in ("challenger_metrics", "champion_metrics"):
        if record.get(key):
            tags[f"promotion.{key}"] = json.dumps({k: round(v, 6) for k, v in record[key].items()})
    return tags


class PromotionsRepository:
    """The ``promotions`` collection: one document per decision, newest first when listed."""

    def __init__(self, collection: Collection) -> None:
        self.col = collection

    def record(self, record: dict[str, Any]) -> bool:
        """Store a decision; best effort (the version's tags hold it too), False when MongoDB is down."""
        try:
            self.col.insert_one(dict(record))
        except PyMongoError as exc:
            logger.warning("promotion decision not stored in MongoDB (kept in the registry tags): %s", exc)
            return False
        return True

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The n most recent decisions, newest first."""
        docs = self.col.find({}).sort("decided_at", DESCENDING).limit(n)
        return [public_doc(doc) for doc in docs]


def now() -> dt.datetime:
    """Decision time (UTC)."""
    return dt.datetime.now(dt.UTC)
