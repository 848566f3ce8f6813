"""Domain errors and their one HTTP mapping: every raised code has a status, services do not import Flask."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from mlstack_core.errors import HTTP_STATUS, register_error_handlers
from mlstack_core.service_errors import ServiceError

REPO = Path(__file__).resolve().parents[2]
SOURCES = [
    REPO / "core" / "src" / "mlstack_core",
    REPO / "serving-flask" / "serving",
    REPO / "etl-flask-scheduler" / "etl",
    REPO / "training-flask-scheduler" / "training",
]


def _raised_codes() -> dict[str, list[str]]:
    """Every constant error code passed to ServiceError(...) in the source, with where."""
    found: dict[str, list[str]] = {}
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ServiceError" and node.args:
                    code = node.args[0]
                    assert isinstance(code, ast.Constant), f"{path}:{node.lineno}: error code must be a literal"
                    found.setdefault(code.value, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_raised_code_has_an_http_status_and_every_status_entry_is_raised():
    raised = _raised_codes()
    assert len(raised) > 20  # the scan sees the code base
    assert {code: where for code, where in raised.items() if code not in HTTP_STATUS} == {}
    assert sorted(set(HTTP_STATUS) - set(raised)) == []


@pytest.mark.parametrize("code", ["TOO_MANY_ROWS", "AUTH_INVALID", "MODEL_NOT_READY", "IDEMPOTENCY_KEY_REUSED"])
def test_the_handler_answers_the_mapped_status_in_the_error_shape(code):
    app = Flask(__name__)
    register_error_handlers(app)

    @app.get("/refuse")
    def refuse():
        raise ServiceError(code, "a message a person can act on", details=[{"field": "x"}])

    response = app.test_client().get("/refuse")
    assert response.status_code == HTTP_STATUS[code]
    assert response.get_json() == {"error_code": code, "message": "a message a person can act on",
                                   "details": [{"field": "x"}]}


def test_a_code_without_a_status_is_our_bug_a_500_and_logged(caplog):
    app = Flask(__name__)
    register_error_handlers(app)

    @app.get("/refuse")
    def refuse():
        raise ServiceError("NOT_IN_THE_TABLE", "whatever")

    with caplog.at_level(logging.ERROR, logger="mlstack_core.errors"):
        response = app.test_client().get("/refuse")
    assert response.status_code == 500
    assert "NOT_IN_THE_TABLE" in caplog.text


@pytest.mark.parametrize("module, path", [
    ("serving.services", "serving-flask"),
    ("etl.services", "etl-flask-scheduler"),
    ("training.services", "training-flask-scheduler"),
    ("mlstack_core.jobs", "core/src"),
    ("mlstack_core.validation", "core/src"),
    ("mlstack_core.rows", "core/src"),
    ("mlstack_core.predictions", "core/src"),
])
def test_services_import_nothing_from_flask(module, path):
    # Blocking the import makes any Flask or Werkzeug import on the way (even an indirect one) fail.
    code = f"import sys; sys.modules['flask'] = sys.modules['werkzeug'] = None; import {module}"
    paths = [str(REPO / path), str(REPO / "core" / "src")]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
