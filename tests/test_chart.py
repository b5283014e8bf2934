"""The umbrella chart (k3d/helm) rendered with Helm's own engine, and the pipeline's render check.

Real here: Helm's template engine, lint and values-schema validation (helm-python-sdk: Helm's Go
SDK, the code the helm binary runs) and Kubernetes' OpenAPI schemas (kubernetes-validate).

Stood in for: the seven subcharts (kafka, spark, minio, mlflow, redis, postgresql,
kube-prometheus-stack) cannot be downloaded here (no chart repositories). Most tests render the
chart as a Git checkout has it, ``charts/`` absent: helm-python-sdk then renders our own templates
and skips the absent dependencies (which is what the pipeline's check does too). The condition,
lint and schema tests copy the chart and put a tiny local stand-in chart for each dependency into
the copy's ``charts/`` (its name, the version Chart.yaml pins, one ConfigMap), which proves that every
``<name>.enabled`` switch really removes its subchart. The real subcharts' own values are not
exercised.

Schemas: every built-in kind is validated strictly with kubernetes-validate for Kubernetes 1.35
(the k3d node image in k3d/cluster.yaml) and for the newest version the package knows.
ServiceMonitor is a CRD that kubernetes-validate has no schema for: it is checked structurally.

The skaffold.yaml check is here too (skaffold deploys this chart): there is no skaffold binary, so
it checks the fields skaffold/v4beta13 allows, copied from Skaffold's published JSON schema.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from coelho_pipeline.chart import (
    ChartRenderError,
    argocd_helm_overrides,
    deployment_images,
    missing_dependencies,
    render_chart,
    verify_images,
)
from coelho_pipeline.values import TagWrite, set_tags

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "k3d" / "helm"
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
APP_VERSION = CHART_META["appVersion"]
DEPENDENCIES = [d["name"] for d in CHART_META["dependencies"]]
RELEASE = "coelho-realtime"
NAMESPACE = "coelho-realtime"
K8S_VERSIONS = ["1.35.0", kubernetes_validate.latest_version()]
SHA = "0123456789abcdef0123456789abcdef01234567"

# values key, component label, Deployment name, container port name -> number
APPS = {
    "fastapi": ("fastapi", "coelho-realtime-fastapi", {"http": 8000}),
    "kafkaProducers": ("kafka-producers", "coelho-realtime-kafka-producers", {"metrics": 8000}),
    "sveltekit": ("sveltekit", "coelho-realtime-sveltekit", {"http": 3000}),
}
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "helm.sh/chart",
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def clean_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart as a Git checkout has it: no charts/ (it is gitignored), whatever this tree holds."""
    dest = tmp_path_factory.mktemp("chart") / "helm"
    shutil.copytree(CHART, dest, ignore=shutil.ignore_patterns("charts"))
    return dest


@pytest.fixture(scope="module")
def chart_with_stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart plus a local stand-in chart in charts/ for each of the seven dependencies."""
    dest = tmp_path_factory.mktemp("chart-stand-ins") / "helm"
    shutil.copytree(CHART, dest, ignore=shutil.ignore_patterns("charts"))
    for dep in CHART_META["dependencies"]:
        sub = dest / "charts" / dep["name"]
        (sub / "templates").mkdir(parents=True)
        (sub / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: {dep['name']}\nversion: {dep['version']}\n"
            f"description: local stand-in for the {dep['name']} chart (tests only)\n"
        )
        (sub / "templates" / "stand-in.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: {{ .Release.Name }}-{{ .Chart.Name }}-stand-in\n"
            "data:\n  chart: {{ .Chart.Name | quote }}\n"
        )
    return dest


def render(chart: Path, environment: str = "production", values_text: str = VALUES_TEXT, **overrides) -> list[dict]:
    return render_chart(chart, values_text, release=RELEASE, namespace=NAMESPACE,
                        overrides={"environment": environment, **overrides})


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def with_tags(text: str, tag: str) -> str:
    """values.yaml with the three app tags set by the pipeline's own writer (coelho_pipeline.values)."""
    out, changes = set_tags(text, [TagWrite(f"{key}.image.tag", tag) for key in APPS])
    assert [c.path for c in changes] == [f"{key}.image.tag" for key in APPS]
    return out


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("environment", ["development", "production"])
def test_default_values_render_in_both_environments(clean_chart: Path, environment: str) -> None:
    objects = render(clean_chart, environment)

    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {d for _, d, _ in APPS.values()} | {"coelho-realtime-spark-streaming"}
    assert set(by_kind(objects, "Service")) == {"coelho-realtime-fastapi", "coelho-realtime-kafka-producers",
                                                "coelho-realtime-sveltekit"}
    shared = by_kind(objects, "ConfigMap")["coelho-realtime-shared"]["data"]
    assert shared["APP_ENV"] == environment
    assert shared["LOG_LEVEL"] == {"production": "info", "development": "debug"}[environment]
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == "coelho-realtime-kafka:9092"
    # An empty tag falls back to the chart's appVersion (Helm convention).
    assert deployment_images(objects) == {
        "fastapi": (f"127.0.0.1:5000/coelho/fastapi:{APP_VERSION}",),
        "kafka-producers": (f"127.0.0.1:5000/coelho/kafka-producers:{APP_VERSION}",),
        "sveltekit": (f"127.0.0.1:5000/coelho/sveltekit:{APP_VERSION}",),
        "spark-streaming": ("docker.io/bitnamilegacy/spark:3.5.3-debian-12-r1",),
    }
    # Every object is namespaced by Helm/Argo CD, none hard-codes another namespace.
    assert all("namespace" not in o["metadata"] for o in objects)


@pytest.mark.parametrize("sha", [SHA, "1234567890" * 4])  # an all-digit SHA must stay a string
def test_the_pipeline_tags_reach_the_deployments(clean_chart: Path, sha: str) -> None:
    objects = render(clean_chart, values_text=with_tags(VALUES_TEXT, sha))
    expected = {component: f"{VALUES[key]['image']['repository']}:{sha}" for key, (component, _, _) in APPS.items()}

    assert verify_images(objects, expected) == []
    for _, name, _ in APPS.values():
        d = by_kind(objects, "Deployment")[name]
        assert container(d)["imagePullPolicy"] == "IfNotPresent"
        assert d["metadata"]["labels"]["app.kubernetes.io/version"] == sha
        assert d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == sha


def test_verify_images_names_every_problem(clean_chart: Path) -> None:
    objects = render(clean_chart, values_text=with_tags(VALUES_TEXT, SHA), kafkaProducers={"enabled": False})
    problems = verify_images(objects, {
        "fastapi": f"127.0.0.1:5000/coelho/fastapi:{SHA}",
        "kafka-producers": f"127.0.0.1:5000/coelho/kafka-producers:{SHA}",
        "sveltekit": "127.0.0.1:5000/coelho/sveltekit:other",
    })
    assert len(problems) == 2
    assert "no Deployment labelled app.kubernetes.io/component=kafka-producers" in problems[0]
    assert "coelho-realtime-sveltekit" in problems[1] and f"sveltekit:{SHA}" in problems[1]
    assert "expected '127.0.0.1:5000/coelho/sveltekit:other'" in problems[1]


def test_deployment_images_collects_every_container_of_every_labelled_deployment() -> None:
    def dep(name: str, component: str | None, *images: str) -> dict:
        labels = {"app.kubernetes.io/component": component} if component else {}
        return {"kind": "Deployment", "metadata": {"name": name, "labels": labels},
                "spec": {"template": {"spec": {"containers": [{"name": f"c{i}", "image": im}
                                                              for i, im in enumerate(images)],
                                               "initContainers": [{"name": "init", "image": "busybox"}]}}}}
    objects = [dep("a", "x", "r/a:1", "r/side:2"), dep("b", "x", "r/a:1"), dep("c", None, "r/c:1"),
               {"kind": "StatefulSet", "metadata": {"labels": {"app.kubernetes.io/component": "y"}}}]
    assert deployment_images(objects) == {"x": ("r/a:1", "r/side:2", "r/a:1")}
    problems = verify_images(objects, {"x": "r/a:1"})
    assert problems == ["Deployment a (x) container c1 runs 'r/side:2', expected 'r/a:1'"]


def test_app_deployments_carry_the_standard_labels(clean_chart: Path) -> None:
    objects = render(clean_chart)
    for key, (component, name, _) in APPS.items():
        d = by_kind(objects, "Deployment")[name]
        for labels in (d["metadata"]["labels"], d["spec"]["template"]["metadata"]["labels"]):
            assert set(labels) == STANDARD_LABELS
            assert labels["app.kubernetes.io/component"] == component
            assert labels["app.kubernetes.io/name"] == "coelho-realtime"
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/part-of"] == "coelho-realtime"
            assert labels["helm.sh/chart"] == f"coelho-realtime-{CHART_META['version']}"
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": "coelho-realtime", "app.kubernetes.io/instance": RELEASE,
                            "app.kubernetes.io/component": component}
        service = by_kind(objects, "Service").get(name)
        assert service is not None and service["spec"]["selector"] == selector
    for obj in objects:
        assert STANDARD_LABELS - {"app.kubernetes.io/component"} <= set(obj["metadata"]["labels"]), obj["metadata"]


def test_probes_hit_the_apps_health_endpoints(clean_chart: Path) -> None:
    objects = render(clean_chart)
    expected = {  # liveness path, readiness path
        "coelho-realtime-fastapi": ("/health", "/health/ready"),
        "coelho-realtime-kafka-producers": ("/health", "/health"),
        "coelho-realtime-sveltekit": ("/healthz", "/healthz"),
    }
    for key, (_, name, ports) in APPS.items():
        c = container(by_kind(objects, "Deployment")[name])
        declared = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert declared == ports
        probes = {kind: c[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
        assert (probes["livenessProbe"]["path"], probes["readinessProbe"]["path"]) == expected[name]
        for probe in probes.values():
            assert declared[probe["port"]] == next(iter(ports.values()))
    fastapi = container(by_kind(objects, "Deployment")["coelho-realtime-fastapi"])
    assert fastapi["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_containers_are_non_root_with_resource_requests(clean_chart: Path) -> None:
    for d in by_kind(render(clean_chart), "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), d["metadata"]["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_sveltekit_reaches_fastapi_through_its_service(clean_chart: Path) -> None:
    objects = render(clean_chart)
    config = by_kind(objects, "ConfigMap")["coelho-realtime-sveltekit"]["data"]
    assert config["FASTAPI_URL"] == "http://coelho-realtime-fastapi:8000"
    assert (config["PORT"], config["NODE_ENV"]) == ("3000", "production")
    env_from = container(by_kind(objects, "Deployment")["coelho-realtime-sveltekit"])["envFrom"]
    assert {"configMapRef": {"name": "coelho-realtime-sveltekit"}} in env_from


# --------------------------------------------------------------------------- secrets


def secret_refs(objects: list[dict]) -> set[tuple[str, str, str]]:
    """(Deployment, secret name, key) of every secretKeyRef."""
    refs = set()
    for d in by_kind(objects, "Deployment").values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((d["metadata"]["name"], ref["name"], ref["key"]))
    return refs


def test_credentials_come_only_from_secret_references(clean_chart: Path) -> None:
    objects = render(clean_chart)
    assert secret_refs(objects) == {
        ("coelho-realtime-fastapi", "coelho-realtime-minio", "root-user"),
        ("coelho-realtime-fastapi", "coelho-realtime-minio", "root-password"),
        ("coelho-realtime-fastapi", "coelho-realtime-redis", "redis-password"),
        ("coelho-realtime-spark-streaming", "coelho-realtime-minio", "root-user"),
        ("coelho-realtime-spark-streaming", "coelho-realtime-minio", "root-password"),
    }
    assert not by_kind(objects, "Secret"), "the chart reads Secrets, it never creates them"
    fastapi_env = {e["name"]: e for e in container(by_kind(objects, "Deployment")["coelho-realtime-fastapi"])["env"]}
    # The password enters the URL through the kubelet's $(VAR) expansion, not through a value.
    assert fastapi_env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@coelho-realtime-redis-master:6379/0"
    for d in by_kind(objects, "Deployment").values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", env["name"]):
                    assert "valueFrom" in env, f"{d['metadata']['name']}: {env['name']} is a literal"
    for cm in by_kind(objects, "ConfigMap").values():
        assert not any(re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", k) for k in cm["data"]), cm["metadata"]["name"]


def test_optional_services_drop_their_settings(clean_chart: Path) -> None:
    objects = render(clean_chart, redis={"enabled": False}, minio={"enabled": False}, mlflow={"enabled": False})
    fastapi_env = {e["name"] for e in container(by_kind(objects, "Deployment")["coelho-realtime-fastapi"]).get("env", [])}
    assert not fastapi_env & {"REDIS_URL", "REDIS_PASSWORD", "AWS_ACCESS_KEY_ID"}
    shared = by_kind(objects, "ConfigMap")["coelho-realtime-shared"]["data"]
    assert not set(shared) & {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"}


def test_subcharts_read_the_secrets_the_setup_script_creates() -> None:
    """One set of Secret names and keys across values.yaml, the subchart blocks and 03-create-secrets.sh."""
    secrets = VALUES["secrets"]
    assert VALUES["minio"]["auth"]["existingSecret"] == secrets["minio"]
    assert VALUES["mlflow"]["externalS3"]["existingSecret"] == secrets["minio"]
    assert VALUES["mlflow"]["externalDatabase"]["existingSecret"] == secrets["postgresql"]
    assert VALUES["postgresql"]["auth"]["existingSecret"] == secrets["postgresql"]
    assert VALUES["redis"]["auth"]["existingSecret"] == secrets["redis"]
    assert VALUES["kube-prometheus-stack"]["grafana"]["admin"]["existingSecret"] == secrets["grafana"]

    script = (REPO_ROOT / "scripts" / "setup" / "03-create-secrets.sh").read_text()
    created = {m.group(1): set(re.findall(r'"?([a-z-]+)=', m.group(2)))
               for m in re.finditer(r"^create_secret (\S+) \\\n((?:    .*\n)+)", script, flags=re.M)}
    used_keys = {
        secrets["minio"]: {"root-user", "root-password"},
        secrets["postgresql"]: {VALUES["postgresql"]["auth"]["secretKeys"]["adminPasswordKey"],
                                VALUES["postgresql"]["auth"]["secretKeys"]["userPasswordKey"],
                                VALUES["mlflow"]["externalDatabase"]["existingSecretPasswordKey"]},
        secrets["redis"]: {VALUES["redis"]["auth"]["existingSecretPasswordKey"]},
        secrets["grafana"]: {VALUES["kube-prometheus-stack"]["grafana"]["admin"]["userKey"],
                             VALUES["kube-prometheus-stack"]["grafana"]["admin"]["passwordKey"]},
    }
    assert created == used_keys


def test_values_hold_no_plaintext_credentials() -> None:
    credential_key = re.compile(r"(password|secretkey|accesskey|secretaccesskey|token|apikey)$", re.I)

    def walk(node: object, path: str) -> list[str]:
        if isinstance(node, dict):
            return [hit for k, v in node.items() for hit in walk(v, f"{path}.{k}")]
        if isinstance(node, list):
            return [hit for i, v in enumerate(node) for hit in walk(v, f"{path}[{i}]")]
        key = path.rsplit(".", 1)[-1]
        # existingSecret*Key settings name a key inside a Secret; they hold no credential.
        if key.startswith("existingSecret") or not credential_key.search(key):
            return []
        return [path] if node not in (None, "") else []

    assert walk(VALUES, "") == []


# --------------------------------------------------------------------------- the Spark streaming job


def test_spark_streaming_job(clean_chart: Path) -> None:
    objects = render(clean_chart)
    d = by_kind(objects, "Deployment")["coelho-realtime-spark-streaming"]
    assert d["metadata"]["labels"]["app.kubernetes.io/component"] == "spark-streaming"
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
    c = container(d)
    spark_image = VALUES["spark"]["image"]
    assert c["image"] == f"docker.io/{spark_image['repository']}:{spark_image['tag']}"
    assert c["command"] == ["/opt/bitnami/spark/bin/spark-submit"]
    args = c["args"]
    assert args[args.index("--master") + 1] == "spark://coelho-realtime-spark-master-svc:7077"
    assert args[args.index("--packages") + 1] == ",".join(VALUES["sparkStreaming"]["packages"])
    assert args[-1] == "/opt/coelho/jobs/kafka_to_delta.py"
    assert not any("secret" in a.lower() or "access.key" in a for a in args), "credentials on the command line"
    env = {e["name"]: e for e in c["env"]}
    assert env["STREAMING_TOPICS"]["value"] == ",".join(VALUES["sparkStreaming"]["topics"])
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "coelho-realtime-minio",
                                                                         "key": "root-password"}
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1001
    (jobs,) = [v for v in pod["volumes"] if v["name"] == "jobs"]
    script = by_kind(objects, "ConfigMap")[jobs["configMap"]["name"]]["data"]["kafka_to_delta.py"]
    assert script == (CHART / "files" / "spark" / "kafka_to_delta.py").read_text().rstrip("\n")
    compile(script, "kafka_to_delta.py", "exec")
    for topic in VALUES["sparkStreaming"]["topics"]:
        assert re.fullmatch(r"[a-z_]+", topic)

    without_spark = render(clean_chart, spark={"enabled": False})
    assert "coelho-realtime-spark-streaming" not in by_kind(without_spark, "Deployment")
    assert "coelho-realtime-spark-streaming" not in by_kind(without_spark, "ConfigMap")


# --------------------------------------------------------------------------- environment and guards


def test_production_refuses_mutable_tags(clean_chart: Path) -> None:
    latest = re.sub(r'(repository: 127\.0\.0\.1:5000/coelho/sveltekit\n(?:    #.*\n)*    tag: )""', r'\1"latest"', VALUES_TEXT)
    assert latest != VALUES_TEXT

    with pytest.raises(ChartRenderError) as err:
        render(clean_chart, "production", values_text=latest)
    message = str(err.value)
    assert str(clean_chart) in message
    assert 'sveltekit.image.tag resolves to "latest", a mutable tag' in message
    assert "templates/sveltekit/deployment.yaml" in message  # Helm's own location of the failure

    images = deployment_images(render(clean_chart, "development", values_text=latest))
    assert images["sveltekit"] == ("127.0.0.1:5000/coelho/sveltekit:latest",)


def test_a_tag_that_yaml_reads_as_a_number_fails_the_schema(clean_chart: Path) -> None:
    # An all-digit commit SHA written without quotes would be a number, and the image ref garbage.
    text = re.sub(r'(coelho/fastapi\n(?:    #.*\n)*    tag: )""', r"\g<1>1234567890", VALUES_TEXT)
    with pytest.raises(ChartRenderError, match=r"at '/fastapi/image/tag': got number, want string"):
        render(clean_chart, values_text=text)


def test_environment_must_be_known(clean_chart: Path) -> None:
    with pytest.raises(ChartRenderError, match=r"at '/environment': value must be one of"):
        render(clean_chart, "prod")


def test_render_uses_the_given_values_text_not_the_chart_file(clean_chart: Path) -> None:
    disabled = VALUES_TEXT.replace("fastapi:\n  enabled: true", "fastapi:\n  enabled: false", 1)
    assert "coelho-realtime-fastapi" not in by_kind(render(clean_chart, values_text=disabled), "Deployment")
    # A values text without a block the chart file has: the file does not fill it in.
    without_spark_streaming = re.sub(r"^sparkStreaming:\n(?:(?:  .*)?\n)*", "", VALUES_TEXT, flags=re.M)
    with pytest.raises(ChartRenderError, match="missing property 'sparkStreaming'"):
        render(clean_chart, values_text=without_spark_streaming)


def test_overrides_are_the_argocd_application_parameters(clean_chart: Path) -> None:
    overrides = argocd_helm_overrides((REPO_ROOT / "k3d" / "argocd" / "application.yaml").read_text())
    assert overrides == {"environment": "production"}
    objects = render_chart(clean_chart, VALUES_TEXT, overrides=overrides)
    assert by_kind(objects, "ConfigMap")["coelho-realtime-shared"]["data"]["APP_ENV"] == "production"
    # Helm's own --set parser: nested names, and forceString keeps a string a string.
    params = ("kind: Application\nspec:\n  source:\n    helm:\n      parameters:\n"
              "        - {name: a.b, value: '3'}\n        - {name: a.c, value: '3', forceString: true}\n"
              "        - {name: d, value: 'x,y'}\n")
    assert argocd_helm_overrides(params) == {"a": {"b": 3, "c": "3"}, "d": "x,y"}


def test_a_broken_template_fails_with_helms_message(clean_chart: Path, tmp_path: Path) -> None:
    broken = tmp_path / "helm"
    shutil.copytree(clean_chart, broken)
    (broken / "templates" / "broken.yaml").write_text("value: {{ .Values.nope.deeper }}\n")
    with pytest.raises(ChartRenderError) as err:
        render(broken)
    assert str(broken) in str(err.value)
    assert "nil pointer evaluating interface {}.deeper" in str(err.value)
    assert "templates/broken.yaml" in str(err.value)

    (broken / "templates" / "broken.yaml").write_text("a: b\n  c: d\n")
    with pytest.raises(ChartRenderError, match="broken.yaml rendered invalid YAML"):
        render(broken)


def test_notes_render_but_are_not_objects(clean_chart: Path) -> None:
    with helm.Chart.load(clean_chart) as chart:
        manifests = chart.render({"environment": "production"}, name=RELEASE, namespace=NAMESPACE)
    notes = manifests["coelho-realtime/templates/NOTES.txt"]
    assert f"fastapi: 127.0.0.1:5000/coelho/fastapi:{APP_VERSION}" in notes
    assert "coelho-realtime-grafana" in notes
    assert all("NOTES" not in str(o) for o in render(clean_chart))


# --------------------------------------------------------------------------- dependencies and conditions


def test_absent_dependencies_are_skipped_and_our_templates_render(clean_chart: Path) -> None:
    assert missing_dependencies(clean_chart) == DEPENDENCIES
    assert len(DEPENDENCIES) == 7
    objects = render(clean_chart)
    assert {o["metadata"]["labels"]["helm.sh/chart"] for o in objects} == {f"coelho-realtime-{CHART_META['version']}"}


def test_every_dependency_has_a_working_enabled_switch(chart_with_stand_ins: Path) -> None:
    # "unpacked": present as a directory (a built dependency would be a .tgz, status "ok").
    assert {d["name"]: d["status"] for d in helm.dependency_list(chart_with_stand_ins)} == dict.fromkeys(
        DEPENDENCIES, "unpacked")
    for dep in CHART_META["dependencies"]:
        assert dep["condition"] == f"{dep['name']}.enabled"
        assert VALUES[dep["name"]]["enabled"] is True, f"{dep['name']}.enabled must exist in values.yaml"

    stand_ins = lambda objects: {o["data"]["chart"] for o in objects if o["metadata"]["name"].endswith("-stand-in")}  # noqa: E731
    assert stand_ins(render(chart_with_stand_ins)) == set(DEPENDENCIES)
    for name in DEPENDENCIES:
        assert stand_ins(render(chart_with_stand_ins, **{name: {"enabled": False}})) == set(DEPENDENCIES) - {name}


def test_service_monitors_follow_kube_prometheus_stack(clean_chart: Path) -> None:
    monitors = by_kind(render(clean_chart), "ServiceMonitor")
    assert set(monitors) == {"coelho-realtime-fastapi", "coelho-realtime-kafka-producers"}
    assert monitors["coelho-realtime-fastapi"]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert not by_kind(render(clean_chart, **{"kube-prometheus-stack": {"enabled": False}}), "ServiceMonitor")


# --------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("environment", ["development", "production"])
def test_lint_is_clean(chart_with_stand_ins: Path, clean_chart: Path, environment: str) -> None:
    report = helm.lint(chart_with_stand_ins, {"environment": environment}, strict=True,
                       namespace=NAMESPACE, kube_version="v1.35.0")
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert findings == [] and report["errors"] == []
    # Only informational notes remain (Helm recommends an icon).
    assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}

    # As a Git checkout has it, the one finding is the dependencies not yet built.
    bare = helm.lint(clean_chart, {"environment": environment}, namespace=NAMESPACE, kube_version="v1.35.0")
    assert [m["error"] for m in bare["messages"] if m["severity"] >= 2] == [
        "chart directory is missing these dependencies: " + ",".join(DEPENDENCIES)]


def check_service_monitor(obj: dict) -> None:
    """Structural check of a monitoring.coreos.com/v1 ServiceMonitor (a CRD; no schema in kubernetes-validate)."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
    assert set(obj["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert obj["spec"]["selector"]["matchLabels"]
    for ep in obj["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert isinstance(ep["port"], str) and ep["path"].startswith("/")
        assert re.fullmatch(r"\d+[smh]", ep["interval"])


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("environment", ["development", "production"])
def test_rendered_objects_validate_against_kubernetes_schemas(
    chart_with_stand_ins: Path, environment: str, k8s_version: str
) -> None:
    objects = render(chart_with_stand_ins, environment, values_text=with_tags(VALUES_TEXT, SHA))
    validated = 0
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(obj)
            continue
        kubernetes_validate.validate(obj, k8s_version, strict=True)
        validated += 1
    assert len(objects) == 20 and validated == 18  # 13 own objects (2 ServiceMonitors) + 7 stand-ins


# --------------------------------------------------------------------------- skaffold.yaml

# Fields skaffold/v4beta13 allows on the objects skaffold.yaml uses (additionalProperties: false
# in each), copied from Skaffold's JSON schema docs-v2/content/en/schemas/v4beta13.json
# (GoogleContainerTools/skaffold at 359a940c). During development the whole file was also
# validated against that schema with jsonschema; the schema itself is not vendored here.
SKAFFOLD_V4BETA13 = {
    "SkaffoldConfig": {"apiVersion", "kind", "metadata", "requires", "build", "test", "manifests", "deploy",
                       "portForward", "resourceSelector", "verify", "customActions", "profiles"},
    "Metadata": {"name", "labels", "annotations"},
    "BuildConfig": {"artifacts", "insecureRegistries", "tagPolicy", "platforms", "local", "googleCloudBuild",
                    "cluster", "hooks"},
    "Artifact": {"image", "context", "sync", "requires", "hooks", "platforms", "runtimeType", "docker", "bazel",
                 "jib", "kaniko", "buildpacks", "custom", "ko"},
    "DockerArtifact": {"dockerfile", "target", "buildArgs", "network", "addHost", "cacheFrom", "cliFlags",
                       "pullParent", "noCache", "squash", "secrets", "ssh"},
    "TagPolicy": {"gitCommit", "sha256", "envTemplate", "dateTime", "customTemplate", "inputDigest"},
    "GitTagger": {"variant", "prefix", "ignoreChanges"},
    "LocalBuild": {"push", "tryImportMissing", "useDockerCLI", "useBuildkit", "concurrency"},
    "DeployConfig": {"docker", "helm", "kpt", "kubectl", "cloudrun", "statusCheck", "statusCheckDeadlineSeconds",
                     "tolerateFailuresUntilDeadline", "kubeContext", "logs"},
    "LegacyHelmDeploy": {"concurrency", "releases", "flags", "hooks"},
    "HelmRelease": {"name", "chartPath", "remoteChart", "valuesFiles", "namespace", "version", "setValues",
                    "setValueTemplates", "setFiles", "createNamespace", "wait", "recreatePods",
                    "skipBuildDependencies", "skipTests", "useHelmSecrets", "repo", "upgradeOnChange", "overrides",
                    "packaged", "dependsOn"},
    "PortForwardResource": {"resourceType", "resourceName", "namespace", "port", "address", "localPort"},
}
GIT_TAGGER_VARIANTS = {"Tags", "CommitSha", "AbbrevCommitSha", "TreeSha", "AbbrevTreeSha"}


def test_skaffold_config_fits_its_declared_schema_version() -> None:
    config = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    allowed = SKAFFOLD_V4BETA13

    def fits(obj: dict, definition: str, where: str) -> None:
        unknown = set(obj) - allowed[definition]
        assert not unknown, f"{where}: {sorted(unknown)} not allowed in skaffold/v4beta13 {definition}"

    assert config["apiVersion"] == "skaffold/v4beta13" and config["kind"] == "Config"  # both required
    fits(config, "SkaffoldConfig", "top level")
    fits(config["metadata"], "Metadata", "metadata")
    fits(config["build"], "BuildConfig", "build")
    fits(config["build"]["tagPolicy"], "TagPolicy", "build.tagPolicy")
    fits(config["build"]["tagPolicy"]["gitCommit"], "GitTagger", "build.tagPolicy.gitCommit")
    assert config["build"]["tagPolicy"]["gitCommit"]["variant"] in GIT_TAGGER_VARIANTS
    fits(config["build"]["local"], "LocalBuild", "build.local")
    for i, artifact in enumerate(config["build"]["artifacts"]):
        fits(artifact, "Artifact", f"build.artifacts[{i}]")
        assert isinstance(artifact["image"], str)  # required
        fits(artifact["docker"], "DockerArtifact", f"build.artifacts[{i}].docker")
        assert (REPO_ROOT / artifact["context"]).is_dir(), artifact["context"]
    fits(config["deploy"], "DeployConfig", "deploy")
    fits(config["deploy"]["helm"], "LegacyHelmDeploy", "deploy.helm")
    for i, release in enumerate(config["deploy"]["helm"]["releases"]):
        fits(release, "HelmRelease", f"deploy.helm.releases[{i}]")
        assert isinstance(release["name"], str)  # required
        assert all(isinstance(v, str) for v in release["setValueTemplates"].values())
    for i, pf in enumerate(config["portForward"]):
        fits(pf, "PortForwardResource", f"portForward[{i}]")
        assert isinstance(pf["port"], int) and isinstance(pf["localPort"], int)


def test_skaffold_builds_the_three_apps_into_the_charts_image_keys(clean_chart: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a["context"] for a in config["build"]["artifacts"]}
    assert artifacts == {VALUES[key]["image"]["repository"]: f"apps/{'kafka_producers' if key == 'kafkaProducers' else key}"
                         for key in APPS}
    (release,) = config["deploy"]["helm"]["releases"]
    assert (release["name"], release["namespace"], release["chartPath"]) == (RELEASE, NAMESPACE, "k3d/helm")
    templates = release["setValueTemplates"]
    for key in APPS:
        name = re.sub(r"[/.:-]", "_", VALUES[key]["image"]["repository"])  # Skaffold's sanitising
        assert templates[f"{key}.image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
        assert templates[f"{key}.image.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}@{{{{.IMAGE_DIGEST_{name}}}}}"
    # What skaffold would pass renders, with a digest-pinned tag.
    digest = "sha256:" + "a" * 64
    objects = render(clean_chart, release["setValues"]["environment"],
                     **{key: {"image": {"tag": f"{SHA}@{digest}"}} for key in APPS})
    assert deployment_images(objects)["fastapi"] == (f"127.0.0.1:5000/coelho/fastapi:{SHA}@{digest}",)
    assert by_kind(objects, "Deployment")["coelho-realtime-fastapi"]["metadata"]["labels"][
        "app.kubernetes.io/version"] == SHA
    services = by_kind(objects, "Service")
    for pf in config["portForward"]:
        assert pf["port"] == services[pf["resourceName"]]["spec"]["ports"][0]["port"]
