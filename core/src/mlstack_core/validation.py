"""Validation of wine rows, shared by ETL ingest and serving predict (it sits on the hot path).

A batch of well-formed rows is checked as one numpy block; anything else row by row in plain Python, which
names every problem. Both give the same result (tested).

A row is a mapping of the 11 physicochemical features (names as in the public data set, ``fixed acidity``;
``fixed_acidity`` is accepted too) to finite numbers within :data:`BOUNDS`, plus an optional ``quality``.
Key order never matters: values are placed by name into the fixed feature order.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlstack_core.data.generator import BOUNDS, FEATURES, TARGET
from mlstack_core.service_errors import ServiceError

MAX_ROWS_PER_REQUEST = 10_000
BLOCK_MIN_ROWS = 8

_CANONICAL: dict[str, str] = {}
for _name in (*FEATURES, TARGET):
    _CANONICAL[_name] = _name
    _CANONICAL[_name.replace(" ", "_")] = _name
_INDEX = {name: i for i, name in enumerate(FEATURES)}
_BOUNDS = [BOUNDS[name] for name in FEATURES]
_QUALITY_BOUNDS = BOUNDS[TARGET]


@dataclass
class ParsedRows:
    """Validated rows: features in FEATURES order, optional ground-truth quality, per-row errors."""

    features: np.ndarray
    quality: list[int | None]
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row is valid."""
        return not self.errors


def _number(value: Any) -> float | None:
    # bool is an int subclass in Python, but true/false is never a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64 (JSON allows any number of digits)
        return None
    return number if math.isfinite(number) else None


def validate_rows(rows: Sequence[Any], *, allow_extra: frozenset[str] = frozenset()) -> ParsedRows:
    """Check every row, collecting all errors (row index, field, message) instead of stopping at the first."""
    # numpy's fixed cost (a few us) outweighs its per-row gain below a handful of rows.
    parsed = _validate_block(rows) if len(rows) >= BLOCK_MIN_ROWS else None
    return parsed if parsed is not None else _validate_row_by_row(rows, allow_extra=allow_extra)


_FEATURE_KEYS = frozenset(FEATURES)
_FEATURE_AND_TARGET_KEYS = frozenset((*FEATURES, TARGET))
_FEATURE_VALUES = operator.itemgetter(*FEATURES)
_NUMBER_TYPES = frozenset({int, float})
_LOW = np.array([low for low, _ in _BOUNDS], dtype=np.float64)
_HIGH = np.array([high for _, high in _BOUNDS], dtype=np.float64)


def _validate_block(rows: Sequence[Any]) -> ParsedRows | None:
    """The common case at numpy speed: every row a JSON object with exactly the 11 canonical names (and maybe
    quality), every value a plain int or float, all within bounds. Anything else returns None and the caller
    checks row by row, which names each problem; both give the same result for any input (tested).
    """
    values = []
    quality: list[int | None] = []
    for row in rows:
        if type(row) is not dict:
            return None
        keys = row.keys()
        if keys == _FEATURE_KEYS:
            quality.append(None)
        elif keys == _FEATURE_AND_TARGET_KEYS:
            q = row[TARGET]
            if q is None:
                quality.append(None)
            elif (type(q) is int or (type(q) is float and q.is_integer())) and (
                _QUALITY_BOUNDS[0] <= q <= _QUALITY_BOUNDS[1]
            ):
                quality.append(int(q))
            else:
                return None
        else:
            return None
        values.append(_FEATURE_VALUES(row))
    # bool is an int subclass and a str would be converted by numpy: only exact int/float take this path.
    if not _NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(values))):
        return None
    try:
        block = np.array(values, dtype=np.float64).reshape(len(values), len(FEATURES))
    except (OverflowError, ValueError):
        return None
    if not (np.isfinite(block).all() and (block >= _LOW).all() and (block <= _HIGH).all()):
        return None
    return ParsedRows(features=block, quality=quality, errors=[])


def _validate_row_by_row(rows: Sequence[Any], *, allow_extra: frozenset[str] = frozenset()) -> ParsedRows:
    """Check each value of each row and collect every problem."""
    n = len(rows)
    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    quality: list[int | None] = [None] * n
    errors: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors.append({"row": i, "errors": {"_row": "must be an object of feature name -> number"}})
            continue
        problems: dict[str, str] = {}
        seen = 0
        for key, value in row.items():
            name = _CANONICAL.get(key)
            if name is None:
                if key not in allow_extra:
                    problems[_shown(key)] = "unknown field; expected the 11 wine features and optional quality"
                continue
            number = _number(value)
            if name == TARGET:
                if value is None:
                    continue
                if number is None or not number.is_integer():
                    problems[name] = "must be a whole number"
                elif not _QUALITY_BOUNDS[0] <= number <= _QUALITY_BOUNDS[1]:
                    problems[name] = f"must be between {_QUALITY_BOUNDS[0]} and {_QUALITY_BOUNDS[1]}"
                else:
                    quality[i] = int(number)
                continue
            j = _INDEX[name]
            seen += 1
            if number is None:
                problems[name] = "must be a finite number"
                continue
            low, high = _BOUNDS[j]
            if not low <= number <= high:
                problems[name] = f"must be between {low} and {high}"
                continue
            out[i, j] = number
        if seen < len(FEATURES):
            present = {_CANONICAL.get(k) for k in row}
            for name in FEATURES:
                if name not in present:
                    problems[name] = "is required"
        if problems:
            errors.append({"row": i, "errors": problems})
    return ParsedRows(features=out, quality=quality, errors=errors)


_SHOWN_KEY_CHARS = 64


def _shown(key: Any) -> str:
    # An error names the unknown field, but a megabyte-long name is not echoed back whole.
    text = str(key)
    return text if len(text) <= _SHOWN_KEY_CHARS else text[:_SHOWN_KEY_CHARS] + "..."


def extract_rows(payload: Any) -> tuple[list[Any], bool]:
    """Rows from the accepted JSON shapes; the flag says whether a single row object was sent.

    Accepted: one row object; a list of rows; ``{"rows": [...]}``; MLflow's ``{"dataframe_records": [...]}``
    and ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``.
    """
    if isinstance(payload, list):
        rows, single = payload, False
    elif isinstance(payload, Mapping):
        if "dataframe_split" in payload:
            rows, single = _split_rows(payload["dataframe_split"]), False
        elif "dataframe_records" in payload:
            rows, single = payload["dataframe_records"], False
        elif "rows" in payload:
            rows, single = payload["rows"], False
        else:
            rows, single = [payload], True
    else:
        raise ServiceError("INVALID_BODY", "Send a JSON object (one row) or a list of row objects.")
    if not isinstance(rows, list):
        raise ServiceError("INVALID_BODY", "Rows must be a JSON list of objects.")
    if not rows:
        raise ServiceError("NO_ROWS", "The request contains no rows.")
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise ServiceError("TOO_MANY_ROWS", f"At most {MAX_ROWS_PER_REQUEST} rows per request; split the batch.")
    return rows, single


def _split_rows(split: Any) -> list[Any]:
    if not isinstance(split, Mapping) or not isinstance(split.get("columns"), list) or not isinstance(
        split.get("data"), list
    ):
        raise ServiceError("INVALID_BODY", "dataframe_split needs 'columns' (list) and 'data' (list of lists).")
    columns, data = split["columns"], split["data"]
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise ServiceError("INVALID_BODY", "dataframe_split 'columns' must be distinct feature names (strings).")
    index = split.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise ServiceError("INVALID_BODY", "dataframe_split 'index', when given, must list one entry per data row.")
    if len(data) > MAX_ROWS_PER_REQUEST:
        raise ServiceError("TOO_MANY_ROWS", f"At most {MAX_ROWS_PER_REQUEST} rows per request; split the batch.")
    rows = []
    for i, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(columns):
            raise ServiceError("INVALID_BODY", f"dataframe_split data row {i} must be a list of {len(columns)} values."
            )
        rows.append(dict(zip(columns, values, strict=True)))
    return rows


_ASCII_WHOLE = re.compile(r"[0-9]{1,9}")


def bounded_int(raw: str | None, *, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as a whole number from ``low`` to ``high`` (ASCII digits only), or a 400 naming it.

    ``str.isdigit`` and ``int`` accept other scripts' digits and superscripts (``²``, ``٣``), which ``int``
    then refuses or reads as a number the caller never typed.
    """
    if raw is None:
        return default
    if not _ASCII_WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        raise ServiceError("INVALID_PARAMETER", f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def require_valid(parsed: ParsedRows) -> None:
    """Raise a 422 listing every invalid row; nothing of the request may be used then."""
    if parsed.errors:
        shown = parsed.errors[:100]
        raise ServiceError("INVALID_ROWS",
            f"{len(parsed.errors)} of {len(parsed.quality)} rows are invalid; nothing was stored. "
            "Fix the listed fields and send the request again.",
            details={"invalid_rows": shown, "truncated": len(parsed.errors) > len(shown)},
        )
