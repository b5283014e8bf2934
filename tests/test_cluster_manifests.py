"""k3d/dagster/: the cluster's Dagster instance, the chart's values, the Argo CD Application and the
plain manifests (settings, RBAC of the run pods, docker-in-docker, PostgreSQL), checked without a
cluster:

* every built-in object validates strictly with kubernetes-validate (Kubernetes 1.35, the k3d node
  image, and the newest version it knows); the Application against the Argo CD CRD fields it uses;
* Dagster's own schemas accept dagster.yaml (the instance, the K8sRunLauncher's config);
* the files agree with each other and with the development dagster.yaml: names of Secrets,
  ConfigMaps, ServiceAccount, volumes and mount paths, the queue, run monitoring and retries, and
  what values.yaml makes the chart render;
* the run pods' Role is exactly the calls the pipeline makes (tests/test_cluster_k8s.py measures them).

There is no helm binary, no Dagster chart (its repository is out of reach) and no API server here: the
chart's rendering of values.yaml is not exercised (k3d/README.md says so).
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import docker
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher

from coelho_pipeline.chart import argocd_helm_overrides, render_chart
from test_argocd_manifests import APPLICATION_SCHEMA as SINGLE_SOURCE_SCHEMA
from test_argocd_manifests import STRING, closed

REPO_ROOT = Path(__file__).resolve().parents[1]
DIR = REPO_ROOT / "k3d" / "dagster"
MANIFEST_FILES = ("pipeline.yaml", "rbac.yaml", "rbac-diff.yaml", "dind.yaml", "postgres.yaml")
APPLIED_BY_ARGOCD = {"pipeline.yaml", "rbac.yaml", "dind.yaml", "postgres.yaml"}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DIR / name).read_text()) if d]


def one(kind: str, name: str, files: tuple[str, ...] = MANIFEST_FILES) -> dict[str, Any]:
    found = [d for f in files for d in docs(f) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


INSTANCE = yaml.safe_load((DIR / "dagster.yaml").read_text())
DEV_INSTANCE = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
VALUES = yaml.safe_load((DIR / "values.yaml").read_text())
LAUNCHER = INSTANCE["run_launcher"]["config"]
CHART_LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
(CODE_LOCATION,) = VALUES["dagster-user-deployments"]["deployments"]
ENV = one("ConfigMap", "coelho-pipeline-env")["data"]


# -- kinds and schemas ------------------------------------------------------------------------------

@pytest.mark.parametrize("k8s_version", ["1.35.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_every_object_validates_strictly(name: str, k8s_version: str) -> None:
    objects = docs(name)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def test_no_secret_is_in_a_file() -> None:
    """Secrets are created by hand and referenced by name; no file holds one or a password value."""
    for path in DIR.iterdir():
        text = path.read_text()
        assert "kind: Secret" not in text, path.name
        assert not re.search(r"(?im)^\s*(stringData|postgresqlPassword|POSTGRES_PASSWORD_FILE)\s*:", text), path.name
    # The only password in the instance is an environment reference.
    assert INSTANCE["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert "postgresqlPassword" not in VALUES["postgresql"]
    assert VALUES["generatePostgresqlPasswordSecret"] is False


def test_dagster_accepts_the_instance_and_the_launchers_config(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((DIR / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    result = process_config(K8sRunLauncher.config_type(), LAUNCHER)
    assert result.success, result.errors
    # A misspelt key is refused, so the check above means something.
    assert not process_config(K8sRunLauncher.config_type(), {**LAUNCHER, "job_namespaces": "x"}).success


# Argo CD's Application CRD fields, as test_argocd_manifests checks them, in the multi-source form:
# spec.sources (ApplicationSource items) instead of spec.source, with the fields a chart source, a
# values reference and a directory of manifests use.
APPLICATION_SCHEMA = copy.deepcopy(SINGLE_SOURCE_SCHEMA)
_spec = APPLICATION_SCHEMA["properties"]["spec"]
_source = _spec["properties"].pop("source")
_source["properties"].update({"chart": STRING, "ref": STRING, "directory": closed(
    {"include": STRING, "exclude": STRING, "recurse": {"type": "boolean"}})})
_source["properties"]["helm"]["properties"]["releaseName"] = STRING
_spec["properties"]["sources"] = {"type": "array", "minItems": 1, "items": _source}
_spec["required"] = ["destination", "project", "sources"]


def test_the_application_deploys_the_pinned_chart_with_these_values_and_manifests() -> None:
    (app,) = docs("application.yaml")
    jsonschema.validate(app, APPLICATION_SCHEMA)
    chart, values, manifests = app["spec"]["sources"]
    with pytest.raises(jsonschema.ValidationError):  # the check does refuse a misspelt key
        jsonschema.validate({**app, "spec": {**app["spec"], "sources": [{**chart, "helm": {"valuesFiles": []}}]}},
                            APPLICATION_SCHEMA)
    assert (chart["repoURL"], chart["chart"]) == ("https://dagster-io.github.io/helm", "dagster")
    # The chart's version is the Dagster version the image pins.
    pins = re.findall(r'"dagster==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text())
    assert chart["targetRevision"] == "1.13.27" and pins == ["1.13.27"]
    # Release "dagster" makes the chart name its instance ConfigMap "dagster-instance" (it drops a
    # chart name the release name already contains).
    assert chart["helm"]["releaseName"] == "dagster" and LAUNCHER["instance_config_map"] == "dagster-instance"
    (value_file,) = chart["helm"]["valueFiles"]
    assert value_file == f"${values['ref']}/k3d/dagster/values.yaml" and (REPO_ROOT / value_file.split("/", 1)[1]).is_file()
    # Both Git sources are the deploy repository the pipeline's own Application reads.
    seed_app = next(d for d in yaml.safe_load_all((REPO_ROOT / "k3d" / "argocd" / "application.yaml").read_text())
                    if d and d["kind"] == "Application")
    for source in (values, manifests):
        assert (source["repoURL"], source["targetRevision"]) == (seed_app["spec"]["source"]["repoURL"], "master")
    assert manifests["path"] == "k3d/dagster"
    included = set(manifests["directory"]["include"].strip("{}").split(","))
    assert included == APPLIED_BY_ARGOCD and all((DIR / f).is_file() for f in included)
    assert app["metadata"]["namespace"] == "argocd" and app["spec"]["destination"]["namespace"] == "dagster"


# -- the instance: the development one's rules, in the cluster ----------------------------------

def test_the_queue_monitoring_and_retries_are_the_development_instances() -> None:
    dev_limits = DEV_INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"]
    limits = INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"]
    # One writer per project (the tag's value), as in development; two projects never wait on each other.
    assert [(x["key"], x["limit"]) for x in limits] == [(x["key"], x["limit"]) for x in dev_limits] \
        == [("coelho/manifest-writer", 1)]
    assert limits[0]["value"] == {"applyLimitPerUniqueValue": True}
    for key in ("max_concurrent_runs",):
        assert INSTANCE["concurrency"]["runs"][key] == DEV_INSTANCE["concurrency"]["runs"][key]
    assert INSTANCE["concurrency"]["pools"] == DEV_INSTANCE["concurrency"]["pools"]
    # The queue is Dagster's, rendered by its chart (whole seconds); in development the pipeline's
    # RunQueue, the same queue dequeuing every half second (a run pod's start dwarfs that half second).
    assert INSTANCE["run_coordinator"] == {"module": "dagster", "class": "QueuedRunCoordinator",
                                           "config": {"dequeue_interval_seconds": 1}}
    assert DEV_INSTANCE["run_coordinator"] == {"module": "coelho_pipeline.coordinator", "class": "RunQueue",
                                               "config": {"dequeue_interval_seconds": 0.5}}
    monitoring = dict(INSTANCE["run_monitoring"])
    assert monitoring.pop("max_resume_run_attempts") == 0
    assert monitoring == DEV_INSTANCE["run_monitoring"]
    for section in ("run_retries", "retention", "auto_materialize", "freshness", "sensors", "schedules",
                    "telemetry", "nux"):
        assert INSTANCE[section] == DEV_INSTANCE[section], section


def test_postgres_storage_reads_every_setting_from_the_environment() -> None:
    db = INSTANCE["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}}
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 would pick psycopg 3 otherwise
    # Run pods get the password from the Secret and the rest copied from the daemon, by name.
    assert LAUNCHER["postgres_password_secret"] == "dagster-postgresql"
    assert LAUNCHER["env_vars"] == ["DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB"]
    assert all("=" not in v for v in LAUNCHER["env_vars"]), "env_vars must name variables, not carry values"


def test_the_run_pods_mount_the_instance_the_state_the_targets_and_the_docker_certificates() -> None:
    volumes = {v["name"]: v for v in LAUNCHER["volumes"]}
    mounts = {m["name"]: m for m in LAUNCHER["volume_mounts"]}
    assert set(volumes) == set(mounts) == {"dagster-instance", "state", "targets", "dind-client-tls"}
    assert volumes["dagster-instance"]["configMap"]["name"] == LAUNCHER["instance_config_map"]
    assert mounts["dagster-instance"] == {"name": "dagster-instance", "subPath": "dagster.yaml",
                                          "mountPath": f"{LAUNCHER['dagster_home']}/dagster.yaml"}
    assert mounts["state"]["mountPath"] == INSTANCE["local_artifact_storage"]["config"]["base_dir"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "coelho-pipeline-state"
    one("PersistentVolumeClaim", "coelho-pipeline-state")
    assert ENV["COELHO_WORKDIR"].startswith(mounts["state"]["mountPath"] + "/")
    targets = one("ConfigMap", "coelho-pipeline-targets")
    assert volumes["targets"]["configMap"]["name"] == "coelho-pipeline-targets"
    assert ENV["COELHO_TARGETS"] == f"{mounts['targets']['mountPath']}/{next(iter(targets['data']))}"
    assert volumes["dind-client-tls"]["secret"]["secretName"] == "dind-client-tls"
    assert ENV["DOCKER_CERT_PATH"] == mounts["dind-client-tls"]["mountPath"]
    # Settings and secrets by reference (envFrom), never as values in the Job.
    assert LAUNCHER["env_config_maps"] == ["coelho-pipeline-env"]
    assert LAUNCHER["env_secrets"] == ["coelho-pipeline-secrets"]


def test_the_settings_configmap_holds_known_settings_only() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for key in ENV:
        assert key.startswith("DOCKER_") or f"`{key}`" in readme, \
            f"{key} is not a documented setting"
    assert not {"COELHO_GIT_TOKEN", "COELHO_REGISTRY_PASSWORD", "COELHO_NOTIFY_WEBHOOKS"} & set(ENV)


def test_the_targets_file_describes_the_k3d_deployment() -> None:
    targets = yaml.safe_load(one("ConfigMap", "coelho-pipeline-targets")["data"]["targets.yaml"])
    (project,) = targets["projects"]
    (environment,) = project["environments"]
    seed_app = next(d for d in yaml.safe_load_all((REPO_ROOT / "k3d" / "argocd" / "application.yaml").read_text())
                    if d and d["kind"] == "Application")
    assert project["git_url"] == seed_app["spec"]["source"]["repoURL"]
    assert (environment["argocd_app"], environment["argocd_namespace"], environment["deploy_namespace"]) == (
        seed_app["metadata"]["name"], seed_app["metadata"]["namespace"], seed_app["spec"]["destination"]["namespace"])
    assert project["apps"] == sorted(p.name for p in (REPO_ROOT / "apps").iterdir() if (p / "Dockerfile").is_file())
    # The name values.yaml gives the images, reached through the pods' registry sidecar.
    assert project["registry"] == "127.0.0.1:5000/coelho"
    assert "token" not in str(project).lower().replace("git_token_env", "")


def test_the_targets_file_loads_with_the_pipelines_own_parser(tmp_path: Path) -> None:
    """Only once the targets file format exists in this checkout (issue 10, part 1)."""
    targets_module = pytest.importorskip("coelho_pipeline.targets")
    path = tmp_path / "targets.yaml"
    path.write_text(one("ConfigMap", "coelho-pipeline-targets")["data"]["targets.yaml"])
    (target,) = targets_module.load_targets(path, apps_root=tmp_path, env={})
    assert target.project.git_url.endswith("/coelho-realtime.git")


# -- the chart's values: the same instance ----------------------------------------------------------

def test_the_chart_renders_what_dagster_yaml_says_through_additional_instance_config() -> None:
    extra = VALUES["additionalInstanceConfig"]
    for section, value in extra.items():
        assert INSTANCE[section] == value, section
    # Every section of dagster.yaml comes either from the chart's own keys or from the block above.
    rendered_by_chart = {"storage", "run_launcher", "run_coordinator", "compute_logs", "telemetry", "sensors",
                         "schedules"}
    assert set(INSTANCE) == rendered_by_chart | set(extra)
    daemon = VALUES["dagsterDaemon"]
    # The chart's own run monitoring/retries/retention would render a second, poorer copy.
    assert not daemon["runMonitoring"]["enabled"] and not daemon["runRetries"]["enabled"]
    assert not VALUES["retention"]["enabled"]
    assert daemon["runCoordinator"]["type"] == INSTANCE["run_coordinator"]["class"]
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"] == {
        "dequeueIntervalSeconds": INSTANCE["run_coordinator"]["config"]["dequeue_interval_seconds"]}
    assert (daemon["sensors"]["useThreads"], daemon["sensors"]["numWorkers"]) == tuple(INSTANCE["sensors"].values())
    assert (daemon["schedules"]["useThreads"], daemon["schedules"]["numWorkers"]) == tuple(INSTANCE["schedules"].values())
    assert VALUES["computeLogManager"]["type"] == INSTANCE["compute_logs"]["class"]
    assert VALUES["telemetry"] == INSTANCE["telemetry"]


def test_the_charts_run_launcher_is_dagster_yamls() -> None:
    chart = CHART_LAUNCHER
    assert chart["jobNamespace"] == LAUNCHER["job_namespace"]
    assert chart["loadInclusterConfig"] is LAUNCHER["load_incluster_config"] is True
    assert chart["imagePullPolicy"] == LAUNCHER["image_pull_policy"]
    assert [c["name"] for c in chart["envConfigMaps"]] == LAUNCHER["env_config_maps"]
    assert [s["name"] for s in chart["envSecrets"]] == LAUNCHER["env_secrets"]
    assert chart["failPodOnRunFailure"] is LAUNCHER["fail_pod_on_run_failure"]
    assert chart["labels"] == LAUNCHER["labels"]
    assert chart["volumes"] == LAUNCHER["volumes"] and chart["volumeMounts"] == LAUNCHER["volume_mounts"]
    assert chart["securityContext"] == LAUNCHER["security_context"]
    assert chart["runK8sConfig"]["containerConfig"] == LAUNCHER["run_k8s_config"]["container_config"]
    pod_spec = dict(chart["runK8sConfig"]["podSpecConfig"])
    # The chart would name its own ServiceAccount: the pod spec overrides it.
    assert pod_spec.pop("service_account_name") == LAUNCHER["service_account_name"]
    assert pod_spec == LAUNCHER["run_k8s_config"]["pod_spec_config"]
    # The chart writes host, user and database literally and names the password's Secret itself.
    assert chart["envVars"] == []
    assert VALUES["global"]["postgresqlSecretName"] == LAUNCHER["postgres_password_secret"]
    assert VALUES["global"]["dagsterHome"] == LAUNCHER["dagster_home"]


def test_the_charts_database_is_the_postgres_manifest() -> None:
    pg = VALUES["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlScheme"] == INSTANCE["storage"]["postgres"]["postgres_db"]["scheme"]
    service = one("Service", "dagster-postgresql")
    assert pg["postgresqlHost"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert pg["service"]["port"] == service["spec"]["ports"][0]["port"]
    (container,) = one("StatefulSet", "dagster-postgresql")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert (env["POSTGRES_USER"]["value"], env["POSTGRES_DB"]["value"]) == (pg["postgresqlUsername"],
                                                                         pg["postgresqlDatabase"])
    # The key K8sRunLauncher and the chart read (dagster_k8s.job.DAGSTER_PG_PASSWORD_SECRET_KEY).
    assert env["POSTGRES_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "dagster-postgresql",
                                                                      "key": "postgresql-password"}}


def test_every_process_loading_the_instance_runs_the_image_that_has_its_class() -> None:
    # The instance names the pipeline's DeliveryInstance, as in development; Dagster imports it in
    # every process that loads the instance: the webserver (and the chart's migrate Job, which takes
    # the webserver's image), the daemon, the code location and the run pods (the code location's image).
    assert INSTANCE["instance_class"] == DEV_INSTANCE["instance_class"] == {
        "module": "coelho_pipeline.instance", "class": "DeliveryInstance"}
    assert VALUES["additionalInstanceConfig"]["instance_class"] == INSTANCE["instance_class"]
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert VALUES[component]["image"] == CODE_LOCATION["image"], component
    # That image runs as user 10001; the chart's webserver listens on port 80.
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in \
        VALUES["dagsterWebserver"]["podSecurityContext"]["sysctls"]


def test_the_code_location_is_the_one_dagster_dev_serves() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert CODE_LOCATION["name"] == workspace["location_name"] == "coelho"
    assert CODE_LOCATION["codeServerArgs"] == ["-m", workspace["module_name"]]
    assert CODE_LOCATION["port"] == 3030
    assert CODE_LOCATION["includeConfigInLaunchedRuns"] == {"enabled": False}
    assert [c["name"] for c in CODE_LOCATION["envConfigMaps"]] == LAUNCHER["env_config_maps"]
    assert [s["name"] for s in CODE_LOCATION["envSecrets"]] == LAUNCHER["env_secrets"]
    launcher_volumes = {v["name"]: v for v in LAUNCHER["volumes"]}
    launcher_mounts = {m["name"]: m for m in LAUNCHER["volume_mounts"]}
    for volume in CODE_LOCATION["volumes"]:
        assert volume == launcher_volumes[volume["name"]]
    for mount in CODE_LOCATION["volumeMounts"]:
        assert mount == launcher_mounts[mount["name"]]
    assert CODE_LOCATION["podSecurityContext"] == LAUNCHER["run_k8s_config"]["pod_spec_config"]["security_context"]


# -- RBAC: exactly the pipeline's calls ---------------------------------------------------------------

def grants(files: tuple[str, ...]) -> dict[str, set[tuple[str, str, str]]]:
    """namespace -> {(apiGroup, resource, verb)} granted to the run pods' ServiceAccount."""
    objects = [d for f in files for d in docs(f)]
    assert not [d for d in objects if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in objects if d["kind"] == "Role"}
    out: dict[str, set[tuple[str, str, str]]] = {}
    bound = set()
    for binding in (d for d in objects if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coelho-pipeline-run", "namespace": "dagster"}]
        ref = binding["roleRef"]
        assert (ref["apiGroup"], ref["kind"]) == ("rbac.authorization.k8s.io", "Role")
        ns = binding["metadata"]["namespace"]
        bound.add((ns, ref["name"]))
        for rule in roles[(ns, ref["name"])]["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}
            out.setdefault(ns, set()).update((g, r, v) for g in rule["apiGroups"] for r in rule["resources"]
                                             for v in rule["verbs"])
    assert bound == set(roles), "every Role is bound"
    return out


RUN_POD_GRANTS = {
    "argocd": {("argoproj.io", "applications", "get"), ("argoproj.io", "applications", "patch")},
    "coelho-realtime": {("apps", "deployments", "list"), ("", "pods", "list")},
}


def test_the_run_pods_may_do_exactly_what_the_pipeline_calls() -> None:
    sa = one("ServiceAccount", "coelho-pipeline-run")
    assert sa["metadata"]["namespace"] == LAUNCHER["job_namespace"] == "dagster"
    assert LAUNCHER["service_account_name"] == sa["metadata"]["name"]
    assert grants(("rbac.yaml",)) == RUN_POD_GRANTS
    # The namespaces are the Argo CD Application's and its destination's.
    seed_app = next(d for d in yaml.safe_load_all((REPO_ROOT / "k3d" / "argocd" / "application.yaml").read_text())
                    if d and d["kind"] == "Application")
    assert set(RUN_POD_GRANTS) == {seed_app["metadata"]["namespace"], seed_app["spec"]["destination"]["namespace"]}


def test_the_diff_role_reads_exactly_the_kinds_the_chart_renders() -> None:
    rendered = render_chart(REPO_ROOT / "k3d" / "helm", (REPO_ROOT / "k3d" / "helm" / "values.yaml").read_text(),
                            overrides=argocd_helm_overrides((REPO_ROOT / "k3d" / "argocd" / "application.yaml")
                                                            .read_text()))
    # Every kind the chart renders is a regular plural (kind + "s", lower case).
    kinds = {(o["apiVersion"].rpartition("/")[0], o["kind"].lower() + "s") for o in rendered}
    diff = grants(("rbac-diff.yaml",))
    assert set(diff) == {"coelho-realtime"}
    assert diff["coelho-realtime"] == {(g, r, v) for g, r in kinds for v in ("get", "list")}
    assert ("", "secrets") not in kinds


# -- docker-in-docker -------------------------------------------------------------------------------

def test_the_run_pods_reach_dind_over_mutual_tls() -> None:
    service = one("Service", "dind")
    port = service["spec"]["ports"][0]["port"]
    assert ENV["DOCKER_HOST"] == f"tcp://{service['metadata']['name']}.{service['metadata']['namespace']}" \
                                 f".svc.cluster.local:{port}"
    assert ENV["DOCKER_TLS_VERIFY"] == "1"  # the docker SDK's (docker.from_env) switch to mutual TLS
    deployment = one("Deployment", "dind")
    spec = deployment["spec"]["template"]["spec"]
    dockerd = next(c for c in spec["containers"] if c["name"] == "dockerd")
    assert dockerd["image"] == "docker:24-dind" and dockerd["securityContext"] == {"privileged": True}
    mount = next(m for m in dockerd["volumeMounts"] if m["name"] == "server-tls")
    server_secret = next(v for v in spec["volumes"] if v["name"] == "server-tls")["secret"]["secretName"]
    assert server_secret == "dind-server-tls"
    assert {f"--host=tcp://0.0.0.0:{port}", "--tlsverify", f"--tlscacert={mount['mountPath']}/ca.pem",
            f"--tlscert={mount['mountPath']}/cert.pem", f"--tlskey={mount['mountPath']}/key.pem"} <= set(dockerd["args"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # Only the run pods get through the NetworkPolicy, by the label the launcher gives them.
    policy = one("NetworkPolicy", "dind")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= LAUNCHER["labels"].items()
    assert rule["ports"] == [{"port": port, "protocol": "TCP"}]


def test_dind_and_the_run_pods_push_and_read_through_the_same_registry_proxy() -> None:
    pod_spec = LAUNCHER["run_k8s_config"]["pod_spec_config"]
    (proxy,) = pod_spec["init_containers"]
    # A native sidecar: it stops when the run's container ends, so the Job completes.
    assert proxy["restart_policy"] == "Always"
    dind_proxy = next(c for c in one("Deployment", "dind")["spec"]["template"]["spec"]["containers"]
                      if c["name"] == "registry-proxy")
    assert (dind_proxy["image"], dind_proxy["args"]) == (proxy["image"], proxy["args"])
    listen, connect = proxy["args"]
    assert "bind=127.0.0.1" in listen and listen.startswith("tcp-listen:5000,")
    # The pipeline's registry, the values file's image names and the k3d mirror all say 127.0.0.1:5000.
    helm_values = yaml.safe_load((REPO_ROOT / "k3d" / "helm" / "values.yaml").read_text())
    assert helm_values["fastapi"]["image"]["repository"].startswith("127.0.0.1:5000/coelho/")
    cluster = yaml.safe_load((REPO_ROOT / "k3d" / "cluster.yaml").read_text())
    assert connect == f"tcp-connect:{cluster['registries']['create']['name']}:5000"


# -- the image --------------------------------------------------------------------------------------

def test_the_dockerfile_takes_its_base_as_an_argument_and_runs_as_a_user() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[0] == "ARG PYTHON_IMAGE=python:3.11-slim" and instructions[1] == "FROM ${PYTHON_IMAGE}"
    assert "USER 10001:10001" in instructions and not any(i.startswith("ENTRYPOINT") for i in instructions)
    assert "EXPOSE 3030" in instructions
    # The image's user is the one the run pods and the code location are told to run as.
    assert LAUNCHER["security_context"]["runAsUser"] == CODE_LOCATION["securityContext"]["runAsUser"] == 10001
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignore[:3] == ["#", "The", "image"] and "*" in ignore and "!coelho_pipeline/" in ignore


# -- dind's certificates: made by the script, used for real ----------------------------------------

# A recording kubectl: `create secret generic NAME --from-file=KEY=PATH…` keeps the files under
# $STATE/secrets/NAME/KEY; `get secret NAME` succeeds when that directory exists.
FAKE_KUBECTL = r"""
secret=""; mode=""
for a in "$@"; do
    case $a in
        get) mode=get ;;
        create) mode=create ;;
        --from-file=*) kv=${a#--from-file=}; mkdir -p "$STATE/secrets/$secret"
                       cp "${kv#*=}" "$STATE/secrets/$secret/${kv%%=*}" ;;
        dind-*) secret=$a ;;
    esac
done
if [ "$mode" = get ]; then [ -d "$STATE/secrets/$secret" ]; fi
"""


def make_certs(tmp: Path) -> subprocess.CompletedProcess[str]:
    from test_setup_scripts import make_bin

    bindir = tmp / "path"
    if not bindir.exists():
        bindir.mkdir()
        make_bin(bindir, real=["openssl", "mktemp", "rm", "cp", "mkdir"], fakes={"kubectl": FAKE_KUBECTL})
    (tmp / "calls.log").touch()
    return subprocess.run([str(DIR / "dind-certs.sh")], capture_output=True, text=True, timeout=60, cwd=tmp,
                          env={"PATH": str(bindir / "bin"), "HOME": str(tmp), "CALLS": str(tmp / "calls.log"),
                               "STATE": str(tmp)})


def test_dind_certs_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required for this test (apt-get install shellcheck)"
    result = subprocess.run([shellcheck, "--external-sources", "--severity=style", str(DIR / "dind-certs.sh")],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dind_certificates_make_a_mutual_tls_connection_under_the_service_name(tmp_path: Path) -> None:
    result = make_certs(tmp_path)
    assert result.returncode == 0, result.stderr
    server, client = tmp_path / "secrets" / "dind-server-tls", tmp_path / "secrets" / "dind-client-tls"
    assert sorted(p.name for p in server.iterdir()) == sorted(p.name for p in client.iterdir()) == \
        ["ca.pem", "cert.pem", "key.pem"]
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    # What the docker SDK in a run pod does with DOCKER_TLS_VERIFY=1 and the client Secret mounted.
    tls = docker.utils.kwargs_from_env(environment={**ENV, "DOCKER_CERT_PATH": str(client)})["tls"]
    host = ENV["DOCKER_HOST"].removeprefix("tcp://").rpartition(":")[0]

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server / "cert.pem", server / "key.pem")
    server_ctx.load_verify_locations(server / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # dockerd --tlsverify
    assert tls.verify is True and tls.cert == (str(client / "cert.pem"), str(client / "key.pem"))
    client_ctx = ssl.create_default_context(cafile=tls.ca_cert)
    client_ctx.load_cert_chain(*tls.cert)

    def handshake(ctx: ssl.SSLContext, server_hostname: str) -> str:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            accepted: list[str] = []

            def serve() -> None:
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                        accepted.append(tls_conn.getpeercert()["subject"][0][0][1])
                        tls_conn.recv(1)
                except (ssl.SSLError, OSError):
                    accepted.append("refused")

            thread = threading.Thread(target=serve)
            thread.start()
            try:
                with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls_conn:
                    tls_conn.sendall(b"x")
            finally:
                thread.join(10)
            return accepted[0]

    # The engine sees the run pod's certificate; the pod checked the engine's name.
    assert handshake(client_ctx, host) == "coelho-pipeline"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_ctx, "dind.elsewhere.svc.cluster.local")
    # A client without the certificate is refused by the engine.
    anonymous = ssl.create_default_context(cafile=tls.ca_cert)
    try:
        outcome = handshake(anonymous, host)
    except (ssl.SSLError, OSError):
        outcome = "refused"
    assert outcome == "refused"


def test_dind_certs_keeps_existing_secrets_and_refuses_half_a_pair(tmp_path: Path) -> None:
    assert make_certs(tmp_path).returncode == 0
    first = (tmp_path / "secrets" / "dind-client-tls" / "cert.pem").read_bytes()
    again = make_certs(tmp_path)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (tmp_path / "secrets" / "dind-client-tls" / "cert.pem").read_bytes() == first
    shutil.rmtree(tmp_path / "secrets" / "dind-server-tls")
    half = make_certs(tmp_path)
    assert half.returncode == 1 and "both must come from one CA" in half.stderr
