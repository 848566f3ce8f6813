"""The Postman collection generated from the OpenAPI documents (scripts/postman.py), run with newman against the
native stack: every documented operation once, each answer checked against the document."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "postman" / "mlstack.postman_collection.json"
FOLDERS = ("serving", "etl", "training")


def _newman() -> str:
    local = REPO / ".tools" / "node" / "node_modules" / ".bin" / "newman"
    found = str(local) if local.exists() else shutil.which("newman")
    if not found:
        pytest.fail("newman is not installed: run scripts/install.sh (it installs newman from npm into .tools)")
    return found


def _operations(doc: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in doc["paths"].items() for method in ops}


def test_collection_file_is_generated_from_the_current_documents():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "postman.py"), "--check"], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_collection_passes_against_the_stack(native_stack_factory, tmp_path):
    stack = native_stack_factory()
    serving = stack.urls["serving"]
    # The collection predicts: wait until training's bootstrap run has given serving a champion.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if requests.get(f"{serving}/ready", timeout=5).status_code == 200:
            break
        time.sleep(1)
    else:
        pytest.fail("serving never became ready (no champion from the bootstrap training run)")
    report = tmp_path / "newman.json"
    result = subprocess.run(
        [
            _newman(), "run", str(COLLECTION),
            *(arg for folder in FOLDERS for arg in ("--env-var", f"{folder}_url={stack.urls[folder]}")),
            "--env-var", f"admin_token={stack.admin_token}",
            "--reporters", "cli,json", "--reporter-json-export", str(report),
            "--timeout-request", "60000",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    run = json.loads(report.read_text())["run"]
    # Every operation the running services document was sent once, by the folder of its service.
    sent = {folder: [] for folder in FOLDERS}
    folder_of = {urlsplit(stack.urls[folder]).port: folder for folder in FOLDERS}
    for execution in run["executions"]:
        port = int(execution["request"]["url"]["port"])
        sent[folder_of[port]].append(execution["item"]["name"].removesuffix(" (original)"))
    for folder in FOLDERS:
        live = requests.get(f"{stack.urls[folder]}/openapi.json", timeout=10).json()
        assert sorted(sent[folder]) == sorted(_operations(live)), folder
    assert run["stats"]["requests"]["failed"] == 0
    assert run["stats"]["assertions"]["failed"] == 0
    # Each answer was checked: by the collection's script (no 5xx) and by its own (a documented status).
    for execution in run["executions"]:
        checks = [a["assertion"] for a in execution.get("assertions", [])]
        assert "no 5xx" in checks, execution["item"]["name"]
        assert any(c.startswith(execution["item"]["name"] + " answers ") for c in checks), execution["item"]["name"]
