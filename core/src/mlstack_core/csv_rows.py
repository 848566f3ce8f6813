"""Rows from a CSV body: the ETL's /ingest upload and serving's text/csv scoring requests read CSV the same way."""

from __future__ import annotations

import csv
import io
from typing import Any

from mlstack_core.service_errors import ServiceError


def parse_csv(data: bytes, *, max_rows: int) -> list[dict[str, Any]]:
    """Rows of a UTF-8 CSV with a header line, comma or semicolon separated (the public data set uses ``;``).

    Every malformed file is a 400 INVALID_CSV naming the line: not UTF-8, a NUL character, a field beyond the
    csv module's limit, a row with more or fewer values than the header, a header naming a column twice.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _csv_error(f"The CSV is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise _csv_error(f"CSV line {line} contains a NUL character")
    # The separator is read from the header alone: values may hold decimal commas in a ';' file.
    end = text.find("\n")
    header = text[: end if end >= 0 else len(text)]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = []
    try:
        if not reader.fieldnames:
            raise _csv_error("The CSV needs a header line naming the 11 features")
        names = [name.strip().strip('"') for name in reader.fieldnames]
        if len(set(names)) != len(names):
            raise _csv_error("The CSV header names a column twice")
        for record in reader:
            if len(rows) >= max_rows:
                raise ServiceError("TOO_MANY_ROWS", f"At most {max_rows} rows per upload; split the file.")
            if None in record:
                raise _csv_error(f"CSV line {reader.line_num} has more values than the header")
            values = list(record.values())
            if None in values:
                raise _csv_error(f"CSV line {reader.line_num} has fewer values than the header")
            rows.append({name: _cell(value) for name, value in zip(names, values, strict=True)})
    except csv.Error as exc:
        raise _csv_error(f"CSV line {reader.line_num} cannot be read ({exc})") from None
    if not rows:
        raise ServiceError("NO_ROWS", "The CSV has a header but no rows.")
    return rows


def _cell(value: str) -> Any:
    text = value.strip()
    if text == "":
        return None
    if not text.isascii():  # float() also reads other scripts' digits ("١٢" is 12.0)
        return text
    try:
        return float(text)
    except ValueError:
        return text  # left as text so validation names the field


def _csv_error(message: str) -> ServiceError:
    return ServiceError("INVALID_CSV", f"{message}; nothing was stored.")
