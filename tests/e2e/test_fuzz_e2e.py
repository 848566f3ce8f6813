"""Schema-driven fuzzing: schemathesis against each live service through Nginx, from its own /openapi.json.

One native stack (FerretDB, S3, MLflow, the three services under Gunicorn behind Nginx). For each service and
each caller (anonymous, the admin token, a wrong token) ``st run`` generates requests from the live document
(its examples, coverage and fuzzing phases: valid and invalid bodies, queries, headers, undeclared methods)
and every answer must pass schemathesis's checks (CHECKS: no 5xx; a documented status, content type, headers
and body; schema-invalid input refused with a 4xx) and ours (tests/e2e/fuzz_hooks.py: every 4xx/5xx is the
JSON error shape; the admin-token operations answer 401 without a token and 403 with a wrong one; 405 for an
undeclared method).

Seeded and bounded (schemathesis.toml beside this file: seed 20261204, from which each operation's seed derives;
at most 10 fuzzed cases per operation, one worker, no shrinking, no example database), so a failure reproduces
with the command the test prints. With the admin token, training's run, manual-run and resume operations are
left out (each starts real training runs, or lets the schedule fire them); anonymous and wrong-token callers
still fuzz them (401/403). The schedules are paused first; a fuzzed schedule change keeps them paused.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

REPO = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
# Seed, examples per operation, timeouts: schemathesis.toml beside this file.
CONFIG = Path(__file__).with_name("schemathesis.toml")
TIMEOUT = 30
SERVICES = ("serving", "etl", "training")
CALLERS = ("anonymous", "admin", "wrong-token")
WRONG_TOKEN = "not-the-admin-token"
CHECKS = (
    # schemathesis's own
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection",
    # ours (fuzz_hooks.py)
    "json_error_shape", "admin_token_enforced", "undeclared_method_refused",
)
# Left out with the admin token: each starts a real training run or lets the schedule fire.
ADMIN_EXCLUDED = {"training": r"_run_|manualTraining|resume"}


def st_command(url: str, service: str, caller: str) -> list[str]:
    """The ``st run`` of one service and caller (printed on failure, to reproduce it)."""
    command = [
        str(REPO / ".venv" / "bin" / "st"), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
        "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing", "--no-color",
    ]
    if caller == "admin" and service in ADMIN_EXCLUDED:
        command += ["--exclude-operation-id-regex", ADMIN_EXCLUDED[service]]
    return command


@pytest.fixture(scope="module")
def stack(native_stack_factory):
    """All three services; serving has its champion; the ETL and training schedules are paused.

    Bounded for the fuzzer, whose bodies run up to the documented 10,000 rows: the ETL stores at most
    MAX_INGEST_ROWS per request (more is the documented 413), and serving keeps no anonymous predictions
    (thousands of rows a second of them slow FerretDB's scans until reads time out; see the README).
    """
    stack = native_stack_factory(extra_env={"MAX_INGEST_ROWS": "100", "STORE_PREDICTIONS": "false"})
    deadline = time.monotonic() + 120
    while requests.get(f"{stack.urls['serving']}/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail("serving never became ready (no champion from the bootstrap training run)")
        time.sleep(1)
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    for service in ("etl", "training"):
        response = requests.post(f"{stack.urls[service]}/jobs/{service}/pause", headers=admin, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
    return stack


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("service", SERVICES)
def test_every_answer_keeps_the_contract(stack, tmp_path, service, caller):
    token = {"anonymous": "", "admin": stack.admin_token, "wrong-token": WRONG_TOKEN}[caller]
    command = st_command(stack.urls[service], service, caller)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "MLSTACK_FUZZ_CALLER": caller,
           "MLSTACK_FUZZ_TOKEN": token, "COLUMNS": "120"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    (tmp_path / "st-run.txt").write_text(output)
    assert result.returncode == 0, (
        f"reproduce: MLSTACK_FUZZ_CALLER={caller} MLSTACK_FUZZ_TOKEN=<token> SCHEMATHESIS_HOOKS={HOOKS} "
        f"{' '.join(command)}\n(whole output in {tmp_path / 'st-run.txt'})\n{failures(output)}"
    )
    assert "Seed: " in output and "generated" in output, output[-3000:]


def failures(output: str) -> str:
    """st's failure section, each line cut short (a generated body can be megabytes long)."""
    start = output.find("FAILURES")
    section = output[start:] if start >= 0 else output[-4000:]
    return "\n".join(line[:300] for line in section.splitlines()[:400])


def test_only_prediction_endpoints_change_state_without_the_admin_token(stack):
    """Every POST/PUT/PATCH/DELETE is behind the admin token, except the three that predict (open by design)."""
    open_writes = set()
    for service in SERVICES:
        doc = requests.get(f"{stack.urls[service]}/openapi.json", timeout=TIMEOUT).json()
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                if method in {"post", "put", "patch", "delete"} and {"adminToken": []} not in operation.get(
                        "security", []):
                    open_writes.add(f"{service} {method.upper()} {path}")
    assert open_writes == {"serving POST /predict", "serving POST /predictDummy/", "serving POST /invocations"}
