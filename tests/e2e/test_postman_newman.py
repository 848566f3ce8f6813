"""The Postman collection (every endpoint, old and new) run with newman against the running native stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "postman" / "mlstack.postman_collection.json"


def _newman() -> str:
    local = REPO / ".tools" / "node" / "node_modules" / ".bin" / "newman"
    found = str(local) if local.exists() else shutil.which("newman")
    if not found:
        pytest.fail("newman is not installed: run scripts/install.sh (it installs newman from npm into .tools)")
    return found


def test_collection_file_is_generated_from_the_current_list():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_postman.py"), "--check"], capture_output=True, text=True,
        timeout=60,
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
            "--env-var", f"serving_url={serving}",
            "--env-var", f"etl_url={stack.urls['etl']}",
            "--env-var", f"training_url={stack.urls['training']}",
            "--env-var", f"admin_token={stack.admin_token}",
            "--reporters", "cli,json", "--reporter-json-export", str(report),
            "--timeout-request", "60000", "--bail",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    run = json.loads(report.read_text())["run"]
    assert run["stats"]["requests"]["total"] == sum(len(f["item"]) for f in json.loads(COLLECTION.read_text())["item"])
    assert run["stats"]["assertions"]["failed"] == 0
