"""Logging configured once per process from a YAML dictConfig, before the app is built."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml

from mlstack_core.request_id import current_request_id


class RequestIdFilter(logging.Filter):
    """Adds the current request id (or '-') to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.request_id = current_request_id() or "-"
        except RuntimeError:  # outside an application context
            record.request_id = "-"
        return True


# Set by mlstack_core.tracing while tracing is on: the current span's (trace id, span id), or None outside one.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def set_trace_context(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Where TraceContextFilter reads the current span's ids from (None: tracing off)."""
    global _trace_ids
    _trace_ids = source


class TraceContextFilter(logging.Filter):
    """Adds trace_id and span_id to records made inside a span while tracing is on; with it off, nothing.

    The JSON formatter writes them as fields (it writes every attribute a record carries beyond the standard
    ones); the plain format leaves them out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        source = _trace_ids
        if source is not None:
            ids = source()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


def configure_logging(
    *, level: str, log_dir: Path, config_file: Path | None = None, log_format: str = "plain", to_file: bool = True
) -> None:
    """Apply the YAML logging config (the packaged default unless config_file is given).

    ``log_format`` names the formatter (plain or json), ``to_file`` adds the rotating file beside stdout.
    """
    if config_file is not None:
        text = Path(config_file).read_text(encoding="utf-8")
    else:
        text = resources.files("mlstack_core").joinpath("logging.yaml").read_text(encoding="utf-8")
    if to_file:
        log_dir.mkdir(parents=True, exist_ok=True)
    for placeholder, value in (
        ("{log_dir}", str(log_dir)), ("{log_level}", level), ("{log_format}", log_format),
        ("{log_handlers}", "[stdout, file]" if to_file else "[stdout]"),
    ):
        text = text.replace(placeholder, value)
    logging.config.dictConfig(yaml.safe_load(text))
