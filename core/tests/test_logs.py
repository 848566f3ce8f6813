"""Logging: LOG_FORMAT=json gives one JSON object per line with the request id; LOG_FILE=false writes no file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlstack_core import request_id
from mlstack_core.logs import configure_logging
from mlstack_core.settings import BaseServiceSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_request_id_as_a_field(tmp_path: Path) -> None:
    configure_logging(level="INFO", log_dir=tmp_path, log_format="json", to_file=True)
    token = request_id.bind("abc-123")
    try:
        logging.getLogger("mlstack.test").info("stored %d rows", 3)
    finally:
        request_id.unbind(token)
    logging.getLogger("mlstack.test").warning("outside a request")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [json.loads(line) for line in (tmp_path / "logs.log").read_text().splitlines()]
    assert [(line["message"], line["request_id"]) for line in lines] == [
        ("stored 3 rows", "abc-123"), ("outside a request", "-")]
    assert {"time", "level", "logger", "process"} <= set(lines[0])
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "mlstack.test"


def test_plain_is_the_default_and_keeps_its_line_shape(tmp_path: Path) -> None:
    configure_logging(level="INFO", log_dir=tmp_path)
    logging.getLogger("mlstack.test").info("hello")
    for handler in logging.getLogger().handlers:
        handler.flush()
    (line,) = (tmp_path / "logs.log").read_text().splitlines()
    assert " INFO [" in line and line.endswith(" mlstack.test rid=-: hello")


def test_no_file_means_stdout_only(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    configure_logging(level="INFO", log_dir=log_dir, log_format="json", to_file=False)
    logging.getLogger("mlstack.test").info("hello")
    assert not log_dir.exists()
    assert [type(h).__name__ for h in logging.getLogger().handlers] == ["StreamHandler"]


def test_settings_read_log_format_and_log_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "a-strong-admin-token-for-this-test-1234")
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_FILE", "false")
    settings = BaseServiceSettings()
    assert settings.log_format == "json" and settings.log_file is False
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match=r"log_format|LOG_FORMAT"):
        BaseServiceSettings()
