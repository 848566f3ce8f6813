"""Logging configured once per process from a YAML dictConfig, before the app is built."""

from __future__ import annotations

import logging
import logging.config
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
