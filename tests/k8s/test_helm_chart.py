"""The Helm chart (deploy/helm/mlstack) rendered and checked without a cluster: lint, schema, required secrets and
the house rules on every rendered manifest. Installing it on a real cluster: test_cluster.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from devstack.servers import NGINX_TEMPLATE, nginx_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mlstack"
TEST_VALUES = Path(__file__).with_name("values-test.yaml")
APPS = ("serving", "etl", "training")
RELEASE = "mls"
HELM_TIMEOUT_SECONDS = 60
# Above conftest.BUILD_TIMEOUT_SECONDS: the first test's setup may build Helm (or wait for its background build).
pytestmark = pytest.mark.timeout(960)

SECRET_VALUES = yaml.safe_load(TEST_VALUES.read_text())["secrets"]
# The secrets every install needs, and those only the trial MLflow needs (values-test.yaml turns it on).
APP_SECRETS = ("adminToken", "serviceToken", "mongoPassword", "mlflowTrainingPassword", "mlflowServingPassword")
TRIAL_SECRETS = ("mlflowAdminPassword", "mlflowFlaskSecretKey", "postgresPassword", "s3SecretAccessKey")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm on the chart; the caller checks the result."""
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS, check=False
    )


def template(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", "mlstack", *args)


def rendered(helm: Path, *args: str) -> list[dict]:
    """The objects `helm template` renders with these arguments (it must succeed)."""
    done = template(helm, *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refusal(helm: Path, setting: str) -> str:
    """What `helm template` says when it refuses the test values with one --set setting (it must refuse)."""
    done = template(helm, "-f", str(TEST_VALUES), "--set", setting)
    assert done.returncode != 0, f"rendered with {setting}"
    return done.stderr


def without_secret(name: str, tmp_path: Path) -> Path:
    """A copy of the test values with one secret removed."""
    values = yaml.safe_load(TEST_VALUES.read_text())
    del values["secrets"][name]
    path = tmp_path / f"values-without-{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def manifests(helm_bin: Path) -> list[dict]:
    """Every object the chart renders with the test values (all trial components on)."""
    return rendered(helm_bin, "-f", str(TEST_VALUES))


def by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def pod_specs(manifests: list[dict]) -> dict[str, dict]:
    """Pod specs of every Deployment and Job, by object name."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in manifests
        if doc["kind"] in ("Deployment", "Job")
    }


def test_lint_strict(helm_bin: Path) -> None:
    done = run_helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(TEST_VALUES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_renders_the_whole_stack(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    assert set(deployments) == {f"{RELEASE}-{name}" for name in (*APPS, "mongo", "postgres", "s3", "mlflow")}
    services = by_kind(manifests, "Service")
    assert set(services) == set(deployments)
    assert set(by_kind(manifests, "Job")) == {f"{RELEASE}-mlflow-users-1"}


# The chart's kubeVersion floor (Chart.yaml), the cluster of ../shared/notes/kubernetes.md, the newest schemas.
API_VERSIONS = ("1.25.0", "1.34.0", "1.37.0")


@pytest.mark.parametrize(
    "values",
    [
        ["-f", str(TEST_VALUES)],
        ["-f", str(TEST_VALUES), "--set", "apps.serving.hpa.enabled=false"],
        ["-f", str(CHART / "values-external.example.yaml")],
    ],
    ids=["all-trial", "no-hpa", "external"],
)
def test_manifests_match_the_kubernetes_api(helm_bin: Path, values: list[str]) -> None:
    """Every rendered object against the API's JSON schemas, strict: an unknown or misspelt field is an error
    (the API server would drop it silently, as kubelet does with unknown config fields)."""
    docs = rendered(helm_bin, *values)
    problems = []
    for version in API_VERSIONS:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{version} {doc['kind']} {doc['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_default_replicas(manifests: list[dict]) -> None:
    """Serving 3 (its HPA's floor: the HPA owns the count), ETL and training 2."""
    deployments = by_kind(manifests, "Deployment")
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")[f"{RELEASE}-serving"]
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-serving"
    assert "replicas" not in deployments[f"{RELEASE}-serving"]["spec"]
    assert deployments[f"{RELEASE}-etl"]["spec"]["replicas"] == 2
    assert deployments[f"{RELEASE}-training"]["spec"]["replicas"] == 2


def test_serving_replicas_without_hpa(helm_bin: Path) -> None:
    docs = rendered(helm_bin, "-f", str(TEST_VALUES), "--set", "apps.serving.hpa.enabled=false")
    assert by_kind(docs, "Deployment")[f"{RELEASE}-serving"]["spec"]["replicas"] == 3
    assert not by_kind(docs, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("name", APP_SECRETS + TRIAL_SECRETS)
def test_missing_secret_fails_naming_it(helm_bin: Path, tmp_path: Path, name: str) -> None:
    done = template(helm_bin, "-f", str(without_secret(name, tmp_path)))
    assert done.returncode != 0, f"rendered without secrets.{name}"
    assert f"secrets.{name} is required" in done.stderr


def test_trial_secrets_needed_only_with_trial_mlflow(helm_bin: Path, tmp_path: Path) -> None:
    values = {"secrets": {name: SECRET_VALUES[name] for name in APP_SECRETS}}
    path = tmp_path / "values-external.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = rendered(helm_bin, "-f", str(path))
    # External MongoDB, MLflow and S3: only the apps run, and the Secret holds only their keys.
    assert set(by_kind(docs, "Deployment")) == {f"{RELEASE}-{app}" for app in APPS}
    secret = by_kind(docs, "Secret")[f"{RELEASE}-secrets"]["stringData"]
    assert set(secret.values()) == {SECRET_VALUES[name] for name in APP_SECRETS}


def test_existing_secret_needs_no_values(helm_bin: Path) -> None:
    docs = rendered(helm_bin, "--set", "secrets.existingSecret=my-secrets")
    assert not by_kind(docs, "Secret")
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for spec in pod_specs(docs).values()
        for container in spec["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert refs == {"my-secrets"}


def test_external_services_example(helm_bin: Path) -> None:
    """values-external.example.yaml: the apps point at the named MongoDB and MLflow, no trial pod, no Secret."""
    example = CHART / "values-external.example.yaml"
    values = yaml.safe_load(example.read_text())
    docs = rendered(helm_bin, "-f", str(example))
    assert set(by_kind(docs, "Deployment")) == {f"{RELEASE}-{app}" for app in APPS}
    assert not by_kind(docs, "Secret")
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    assert config["HOSTDBEXT"] == values["mongo"]["host"]
    for app in ("serving", "training"):
        container = pod_specs(docs)[f"{RELEASE}-{app}"]["containers"][0]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["MLFLOW_TRACKING_URI"] == values["mlflow"]["trackingUri"]
        assert container["image"] == f"{values['image']['prefix']}/{app}:{values['image']['tag']}"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("apps.etl.replicas=three", "at '/apps/etl/replicas': got string, want integer"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("config.LOG_LEVEL=LOUD", "at '/config/LOG_LEVEL'"),
        ("apps.serving.hpa.targetCPUUtilizationPercentage=150", "at '/apps/serving/hpa/targetCPU"),
        ("nginx.port=80", "at '/nginx/port'"),
        ("mlflow.trackingUri=mlflow:5000", "at '/mlflow/trackingUri'"),
        ("secrets.adminToken=short", "at '/secrets/adminToken'"),
        ("apps.serving.replica=3", "'replica' not allowed"),
    ],
)
def test_schema_rejects_bad_values(helm_bin: Path, setting: str, complaint: str) -> None:
    """values.schema.json: types, enums, ranges, patterns and no unknown keys (a typo is an error, not a no-op)."""
    message = refusal(helm_bin, setting)
    assert "values don't meet the specifications of the schema" in message
    assert complaint in message


def test_every_container_has_probes_resources_and_runs_as_non_root(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    for name, spec in pod_specs(manifests).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            if name in deployments:  # a Job's pod ends; probes are for long-running ones
                assert {"livenessProbe", "readinessProbe"} <= container.keys(), where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where


def test_app_pods_health_ready_readonly_and_scraped(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    for app in APPS:
        pod = deployments[f"{RELEASE}-{app}"]["spec"]["template"]
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert set(containers) == {"app", "nginx"}
        assert containers["app"]["image"] == f"mlstack/{app}:local"
        assert containers["app"]["livenessProbe"]["httpGet"]["path"] == "/health"
        for container in containers.values():
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        annotations = pod["metadata"]["annotations"]
        gunicorn_port = containers["app"]["ports"][0]["containerPort"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(gunicorn_port)
        # The sidecar proxies to Gunicorn over loopback; the Service reaches only the sidecar.
        nginx_env = {item["name"]: item["value"] for item in containers["nginx"]["env"]}
        assert nginx_env["NGINX_UPSTREAM"] == f"127.0.0.1:{gunicorn_port}"
        assert containers["nginx"]["ports"] == [{"name": "http", "containerPort": int(nginx_env["NGINX_PORT"])}]
        service = by_kind(manifests, "Service")[f"{RELEASE}-{app}"]["spec"]
        assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
        assert service["selector"] == deployments[f"{RELEASE}-{app}"]["spec"]["selector"]["matchLabels"]


def test_nginx_uses_the_shared_template_with_each_apps_settings(manifests: list[dict]) -> None:
    nginx = by_kind(manifests, "ConfigMap")[f"{RELEASE}-nginx"]["data"]
    assert nginx == {"default.conf.template": NGINX_TEMPLATE.read_text().rstrip("\n")}
    deployments = by_kind(manifests, "Deployment")
    for app, folder in zip(APPS, ("serving-flask", "etl-flask-scheduler", "training-flask-scheduler"), strict=True):
        containers = {c["name"]: c for c in deployments[f"{RELEASE}-{app}"]["spec"]["template"]["spec"]["containers"]}
        env = {e["name"]: e["value"] for e in containers["nginx"]["env"]}
        assert nginx_settings(folder).items() <= env.items(), app


def test_packaged_chart_carries_the_templates(helm_bin: Path, tmp_path: Path) -> None:
    """files/nginx/* link to the shared template and the apps' nginx.env: `helm package` must carry them."""
    done = run_helm(helm_bin, "package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (archive,) = tmp_path.glob("mlstack-*.tgz")
    done = run_helm(helm_bin, "template", RELEASE, str(archive), "-f", str(TEST_VALUES))
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    nginx = by_kind(docs, "ConfigMap")[f"{RELEASE}-nginx"]["data"]
    assert nginx["default.conf.template"] == NGINX_TEMPLATE.read_text().rstrip("\n")
    serving = by_kind(docs, "Deployment")[f"{RELEASE}-serving"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for c in serving if c["name"] == "nginx" for e in c["env"]}
    assert nginx_settings("serving-flask").items() <= env.items()


def test_containers_run_as_the_images_users(manifests: list[dict]) -> None:
    """The uid the chart asks for is the one our Dockerfiles create (runAsNonRoot needs a numeric USER)."""
    for dockerfile, names in (
        ("compose/app.Dockerfile", [f"{RELEASE}-{app}" for app in APPS]),
        ("model-management/Dockerfile", [f"{RELEASE}-mlflow", f"{RELEASE}-mlflow-users-1"]),
    ):
        (user,) = re.findall(r"^USER (\d+):\d+$", (REPO / dockerfile).read_text(), re.MULTILINE)
        specs = pod_specs(manifests)
        for name in names:
            container = specs[name]["containers"][0]
            assert container["securityContext"]["runAsUser"] == int(user), name


def test_every_app_has_its_pod_disruption_budget(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    budgets = list(by_kind(manifests, "PodDisruptionBudget").values())
    for app in APPS:
        labels = deployments[f"{RELEASE}-{app}"]["spec"]["selector"]["matchLabels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"] == labels]
        assert len(matching) == 1, app
        assert matching[0]["spec"]["minAvailable"] >= 1


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("apps.etl.replicas=1", "apps.etl.pdb.minAvailable (1) must be below its replica count (1)"),
        ("apps.serving.hpa.minReplicas=2", "apps.serving.pdb.minAvailable (2) must be below its replica count (2)"),
        ("apps.serving.hpa.maxReplicas=2", "apps.serving.hpa.maxReplicas (2) is below its minReplicas (3)"),
    ],
)
def test_budgets_and_autoscaling_that_cannot_work_are_refused(helm_bin: Path, setting: str, complaint: str) -> None:
    assert complaint in refusal(helm_bin, setting)


def test_network_policies(manifests: list[dict]) -> None:
    policies = by_kind(manifests, "NetworkPolicy")
    for app in APPS:
        rules = policies[f"{RELEASE}-{app}"]["spec"]["ingress"]
        gunicorn = [r for r in rules if r["ports"] == [{"port": "gunicorn", "protocol": "TCP"}]]
        # Only Prometheus reaches Gunicorn from outside the pod (its Nginx uses loopback).
        assert len(gunicorn) == 1 and len(gunicorn[0]["from"]) == 1, app
        assert gunicorn[0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
        assert all(r["ports"][0]["port"] in ("http", "gunicorn") for r in rules), app
    # The registry: only serving (reads), training (writes) and the user provisioning job get in; never the ETL.
    registry = policies[f"{RELEASE}-mlflow"]["spec"]["ingress"][0]["from"]
    components = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in registry}
    assert components == {"serving", "training", "mlflow-users"}
    etl_egress = policies[f"{RELEASE}-etl-egress"]["spec"]["egress"]
    assert {port["port"] for rule in etl_egress for port in rule["ports"]} == {53, 27017, "http"}
    for store in ("postgres", "s3"):
        peers = policies[f"{RELEASE}-{store}"]["spec"]["ingress"][0]["from"]
        assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers] == ["mlflow"]


def test_network_policy_clients_narrow_the_nginx_port(helm_bin: Path, tmp_path: Path) -> None:
    """With networkPolicy.clients set, the Nginx port admits those clients and the release's own apps only."""
    client = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump({"networkPolicy": {"clients": [client]}}))
    docs = rendered(helm_bin, "-f", str(TEST_VALUES), "-f", str(path))
    for app in APPS:
        rules = by_kind(docs, "NetworkPolicy")[f"{RELEASE}-{app}"]["spec"]["ingress"]
        (http,) = [r for r in rules if r["ports"][0]["port"] == "http"]
        own_apps = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE, "mlstack.io/tier": "app"}}}
        assert http["from"] == [own_apps, client], app


def test_network_policies_can_be_turned_off(helm_bin: Path) -> None:
    docs = rendered(helm_bin, "-f", str(TEST_VALUES), "--set", "networkPolicy.enabled=false")
    assert not by_kind(docs, "NetworkPolicy")


def test_no_secret_value_outside_the_secret(manifests: list[dict]) -> None:
    secret = by_kind(manifests, "Secret")[f"{RELEASE}-secrets"]
    assert set(secret["stringData"].values()) == set(SECRET_VALUES.values())
    for doc in manifests:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        leaked = [key for key, value in SECRET_VALUES.items() if value in text]
        assert not leaked, f"{doc['kind']} {doc['metadata']['name']} holds secrets.{leaked}"


def test_each_app_gets_only_its_own_registry_credentials(manifests: list[dict]) -> None:
    specs = pod_specs(manifests)
    wanted_by_app = {"serving": {"MLFLOW_SERVING_PASSWORD"}, "training": {"MLFLOW_TRAINING_PASSWORD"}, "etl": set()}
    for app, wanted in wanted_by_app.items():
        app_container = specs[f"{RELEASE}-{app}"]["containers"][0]
        keys = {
            env["valueFrom"]["secretKeyRef"]["key"]
            for env in app_container["env"]
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        assert {key for key in keys if key.startswith("MLFLOW_")} == wanted, app


# Read by someone other than the settings objects: Gunicorn's config (mlstack_core/gunicorn_conf.py reads
# GUNICORN_* and FORWARDED_ALLOW_IPS), GitPython and MLflow's client.
OTHER_READERS = re.findall(r'os\.environ\.get\("(\w+)"', (REPO / "core/src/mlstack_core/gunicorn_conf.py").read_text())
OTHER_READERS += ["GIT_PYTHON_REFRESH", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]


def app_environment(manifests: list[dict], app: str) -> dict[str, str]:
    """The environment the chart gives an app container: its ConfigMap plus its own env, secrets resolved."""
    config = by_kind(manifests, "ConfigMap")[f"{RELEASE}-config"]["data"]
    secret = by_kind(manifests, "Secret")[f"{RELEASE}-secrets"]["stringData"]
    container = pod_specs(manifests)[f"{RELEASE}-{app}"]["containers"][0]
    env = dict(config)
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secret[ref["key"]] if ref else item["value"]
    return env


@pytest.mark.parametrize("app", APPS)
def test_apps_accept_the_rendered_configuration(manifests: list[dict], app: str) -> None:
    """Each app's own settings object validates the environment the chart gives it, and knows every name in it
    (the settings ignore unknown names, so a misspelt one would otherwise pass unnoticed)."""
    from etl.settings import EtlSettings
    from mlstack_core.settings import load_settings
    from serving.settings import ServingSettings
    from training.settings import TrainingSettings

    settings_cls = {"serving": ServingSettings, "etl": EtlSettings, "training": TrainingSettings}[app]
    env = app_environment(manifests, app)
    known = {
        str(name)
        for field in settings_cls.model_fields.values()
        for name in getattr(field.validation_alias, "choices", ())
    }
    assert set(env) - known - set(OTHER_READERS) == set(), app
    settings = load_settings(settings_cls, env)
    assert settings.admin_token.get_secret_value() == SECRET_VALUES["adminToken"]
    assert settings.mongo_host == f"{RELEASE}-mongo"
