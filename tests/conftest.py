"""Fixtures shared by the test folders that need built tools or images (marker names: pyproject.toml):
Helm (the chart tests and the cluster test in tests/k8s), built by scripts/k8s/tools.sh; the project's Docker
engine, the stand-in images and our images, made once per session (the compose test in tests/containers and the
cluster test); the timings of those phases, printed in the terminal summary."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.containers import (
    BASE_IMAGES_TIMEOUT,
    BUILD_TIMEOUT,
    ENGINE_TIMEOUT,
    REPO,
    REQUIRED_SECRETS,
    SCRIPTS,
    Compose,
    reason,
    run,
    write_env_file,
)
from devstack.ports import free_port

TOOLS_SH = REPO / "scripts" / "k8s" / "tools.sh"
# A first build of Helm through the Go module proxy (cold caches) takes minutes, more when scripts/test.sh's
# background builds hold the machine; the chart tests raise their own per-test limit to fit it
# (test_helm_chart.py's pytestmark), since the first test's setup runs it.
BUILD_TIMEOUT_SECONDS = 900


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Path of the pinned helm binary (built into .tools/bin when missing or of another version)."""
    began = time.monotonic()
    done = subprocess.run(
        [str(TOOLS_SH)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    assert done.returncode == 0, f"scripts/k8s/tools.sh failed:\n{done.stderr}"
    print(f"scripts/k8s/tools.sh: {time.monotonic() - began:.1f} s")
    return Path(done.stdout.strip().splitlines()[-1])


TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def container_timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Wall-clock seconds per phase (engine start, builds, stack up...), shown at the end of the run."""
    return request.config.stash.setdefault(TIMINGS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the measured phases, so every CI log shows how long the container checks took."""
    timings = config.stash.get(TIMINGS, {})
    if timings:
        terminalreporter.write_sep("-", "container stack timings")
        for name, seconds in timings.items():
            terminalreporter.write_line(f"{name:<48}{seconds:8.1f} s")


def _can_start_engine() -> bool:
    """engine.sh installs and starts dockerd only as root; for anyone else a failed start is not our bug."""
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def docker_env(container_timings: dict[str, float]) -> Iterator[dict[str, str]]:
    """The environment that reaches the project's engine (DOCKER_HOST, DOCKER_CONFIG); started if needed."""
    engine = SCRIPTS / "engine.sh"
    was_running = subprocess.run([engine, "status"], capture_output=True, timeout=30).returncode == 0
    started = time.monotonic()
    try:
        result = subprocess.run([engine, "start"], capture_output=True, text=True, timeout=ENGINE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"container engine cannot start: engine.sh start took over {ENGINE_TIMEOUT}s", pytrace=False)
    if result.returncode != 0:
        if not _can_start_engine():
            pytest.skip(f"container engine cannot be started by this user: {reason(result.stderr)}")
        pytest.fail(f"container engine cannot start: {reason(result.stderr)}", pytrace=False)
    container_timings["engine start" + (" (already running)" if was_running else "")] = time.monotonic() - started
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    yield env
    if not was_running:
        # Started for this session: stopped again (images stay in its data root for the next, warm, run).
        subprocess.run([engine, "stop"], capture_output=True, timeout=90)


@pytest.fixture(scope="session")
def base_images(docker_env: dict[str, str], container_timings: dict[str, float]) -> list[str]:
    """The local stand-ins for every third-party image, tagged as the Dockerfiles and compose files name them."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [SCRIPTS / "base-images.sh"], env=docker_env, capture_output=True, text=True,
            timeout=BASE_IMAGES_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"stand-in images could not be made within {BASE_IMAGES_TIMEOUT}s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"stand-in images could not be made: {reason(result.stderr)}", pytrace=False)
    built = "built" if re.search(r"\] built ", result.stderr) else "all cached"
    container_timings[f"stand-in base images ({built})"] = time.monotonic() - started
    listed = run([SCRIPTS / "base-images.sh", "--list"], what="base-images.sh --list", timeout=30, env=docker_env)
    return listed.stdout.split()


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The test's .env values: fresh random secrets, free loopback ports, schedules out of the way."""
    values = {name: secrets.token_urlsafe(24) for name in REQUIRED_SECRETS}
    ports = set()
    names = ("SERVING_PORT", "ETL_PORT", "TRAINING_PORT", "MLFLOW_PORT", "MINIO_PORT", "MINIO_CONSOLE_PORT",
             "PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT", "JAEGER_PORT")
    while len(ports) < len(names):
        ports.add(free_port())
    values.update({name: str(port) for name, port in zip(names, sorted(ports), strict=True)})
    values.update(
        PUBLISH_ADDRESS="127.0.0.1",
        # The closed loop triggers runs itself: scheduled runs must not interleave with its checks.
        ETL_INTERVAL_SECONDS="3600",
        TRAINING_INTERVAL_SECONDS="3600",
        SEED_ROWS="300",
        # Alertmanager needs a receiver; nothing listens there (the alert path is tested natively). Random, as
        # the secret it stands for: the image scan looks for it.
        ALERT_WEBHOOK_URL=f"http://127.0.0.1:9/alerts/{secrets.token_urlsafe(12)}",
        # Traces on, as README's Traces section turns them on: Jaeger (profile "tracing") comes up with the stack
        # and the apps export to it over the compose network.
        COMPOSE_PROFILES="tracing",
        OTEL_TRACES_ENABLED="true",
    )
    return values


@pytest.fixture(scope="session")
def env_file(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test's env file (outside the repository, so it can never enter a build context)."""
    return write_env_file(tmp_path_factory.mktemp("compose") / "test.env", stack_env)


@pytest.fixture(scope="session")
def compose(docker_env: dict[str, str], env_file: Path) -> Compose:
    """`docker compose` against the project's engine with the test's env file."""
    return Compose(docker_env, env_file)


@pytest.fixture(scope="session")
def built_images(compose: Compose, base_images: list[str], container_timings: dict[str, float]) -> dict[str, str]:
    """Our four images, built by compose from the Dockerfiles as they are; the rebuild measures the warm cache."""
    model = compose.config()
    images = {name: service["image"] for name, service in model["services"].items() if "build" in service}
    for attempt in ("first build", "rebuild (warm cache)"):
        started = time.monotonic()
        compose("build", what=f"docker compose build ({attempt})", timeout=BUILD_TIMEOUT)
        container_timings[f"app images: {attempt}"] = time.monotonic() - started
    # Every code change leaves the previous build untagged: drop those, or the engine's disk fills run by run.
    run(["docker", "image", "prune", "--force"], what="docker image prune", timeout=300, env=compose.env)
    return images
