"""The project's Docker engine, stand-in images and our images, for the tests that need them (the compose stack
test and the Helm cluster test): one `run` with a deadline, one `Compose` wrapper, and the constants they share."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "containers"
ROOT_COMPOSE = REPO / "docker-compose.yml"
CI_OVERRIDE = REPO / "compose" / "ci.override.yml"
REQUIRED_SECRETS = (
    "ADMIN_TOKEN", "SERVICE_TOKEN", "MONGO_INITDB_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_TRAINING_PASSWORD", "MLFLOW_SERVING_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY", "ALERT_WEBHOOK_URL",
)
# Its own project name, so the tests never touch a stack someone runs from the same files.
PROJECT = "mlstack-ci"

# Bounds (seconds), far above the cold figures measured on the 2-core machines (engine 5, stand-ins 90,
# first image build 70-120): they only stop a hung step.
ENGINE_TIMEOUT = 300
BASE_IMAGES_TIMEOUT = 900
BUILD_TIMEOUT = 900


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def reason(stderr: str) -> str:
    """The most telling line of a script's stderr: its ERROR line if it printed one, else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or ["(no output)"])[-1]


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; fail the test with one line naming `what` on timeout or (check) error."""
    try:
        result = subprocess.run(
            [str(part) for part in cmd], cwd=cwd, env=env, input=input_text, capture_output=True, text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: did not finish within {timeout:.0f}s", pytrace=False)
    if check and result.returncode != 0:
        pytest.fail(f"{what}: exit code {result.returncode}: {tail(result.stderr or result.stdout)}", pytrace=False)
    return result


class Compose:
    """`docker compose` on the project's engine with the test's env file; project `mlstack-ci` by default."""

    def __init__(self, env: dict[str, str], env_file: Path) -> None:
        self.env = env
        self.env_file = env_file

    def __call__(
        self,
        *args: str,
        what: str,
        timeout: float = 120,
        files: Sequence[Path] = (ROOT_COMPOSE, CI_OVERRIDE),
        project: str | None = PROJECT,
        cwd: Path = REPO,
        check: bool = True,
        env_file: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one compose command; `files=()` lets compose find the folder's own docker-compose.yml."""
        cmd = ["docker", "compose", "--env-file", str(env_file or self.env_file)]
        if project:
            cmd += ["--project-name", project]
        for file in files:
            cmd += ["--file", str(file)]
        return run([*cmd, *args], what=what, timeout=timeout, env=self.env, cwd=cwd, check=check)

    def config(self, **kwargs: Any) -> dict[str, Any]:
        """The resolved model of the root file plus the CI override, as JSON."""
        return json.loads(self("config", "--format", "json", what="docker compose config", **kwargs).stdout)

    def diagnostics(self) -> str:
        """What a person needs when the stack misbehaves: container states and the last log lines."""
        ps = self("ps", "--all", what="docker compose ps", check=False).stdout
        logs = self("logs", "--no-color", "--tail", "25", what="docker compose logs", check=False, timeout=60).stdout
        return f"{ps}\n--- last log lines ---\n{tail(logs, 120)}"


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """Write values as a private .env file."""
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    return path
