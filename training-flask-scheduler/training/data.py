"""Training data: every labelled row in MongoDB, or generated rows when MongoDB cannot provide enough."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from pymongo.errors import PyMongoError

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.rows import RowsRepository

logger = logging.getLogger(__name__)

SOURCE_MONGODB = "mongodb"
SOURCE_GENERATED = "generated"


@dataclass(frozen=True)
class TrainingData:
    """The rows of one run (columns FEATURES then TARGET) and where they came from."""

    frame: pd.DataFrame
    source: str  # "mongodb" or "generated"
    reason: str  # why this source was used
    mongodb_rows: int | None  # labelled rows MongoDB had (None when it was unreachable)
    skipped_rows: int = 0  # malformed rows left out

    @property
    def rows(self) -> int:
        """Number of rows used."""
        return len(self.frame)

    def summary(self) -> dict[str, object]:
        """The data part of a run summary."""
        return {"source": self.source, "rows": self.rows, "reason": self.reason,
                "mongodb_labelled_rows": self.mongodb_rows, "skipped_rows": self.skipped_rows}


def load_training_data(
    repo: RowsRepository, *, min_rows: int, fallback_rows: int, seed: int, read_timeout_seconds: float
) -> TrainingData:
    """All labelled rows from MongoDB; generated rows when it is unreachable or has fewer than min_rows."""
    try:
        features, quality, skipped = repo.labelled_arrays(max_time_ms=int(read_timeout_seconds * 1000))
    except PyMongoError as exc:
        logger.warning("MongoDB unavailable, training on %d generated rows: %s", fallback_rows, exc)
        return _generated(
            fallback_rows, seed, f"MongoDB unreachable ({type(exc).__name__}); used generated rows", None
        )
    if len(quality) < min_rows:
        logger.info("only %d labelled rows in MongoDB (< %d): training on generated rows", len(quality), min_rows)
        return _generated(
            fallback_rows, seed,
            f"MongoDB has {len(quality)} labelled rows, fewer than MIN_TRAINING_ROWS={min_rows}; used generated rows",
            len(quality),
        )
    frame = pd.DataFrame(features, columns=list(FEATURES))
    frame[TARGET] = quality
    return TrainingData(frame, SOURCE_MONGODB, f"{len(quality)} labelled rows from MongoDB", len(quality), skipped)


def _generated(n: int, seed: int, reason: str, mongodb_rows: int | None) -> TrainingData:
    frame = generate_frame(n, seed=seed)
    frame = frame[[*FEATURES, TARGET]].astype("float64")
    return TrainingData(frame, SOURCE_GENERATED, reason, mongodb_rows)
