"""Runs as Kubernetes Jobs, for real: `dagster dev`'s daemon launches each run with dagster-k8s's
K8sRunLauncher, configured by k3d/dagster/dagster.yaml, against a Kubernetes API served by kmock; a
TEST DOUBLE of the Job controller and kubelet (tests/kubelet_double.py) runs each Job's container
command as a local process with the Job's environment and volumes, and writes the statuses the
launcher's run monitoring reads. The same API serves the Argo CD Application and its Deployments
(tests/argocd_double.py), so the delivery inside the Job syncs Argo CD as in the cluster.

The run storage both sides share is PostgreSQL (the cluster instance's own storage, a real server):
the daemon queues and launches, the process in the Job runs and records, each through its own
connection, as webserver, daemon and run pods do in the cluster. A shared sqlite file would also
work on one host, but would not be the configuration under test.

Objects in the API are the shipped ones where the repository ships them (the run pods'
ServiceAccount, the state volume's claim, the targets ConfigMap) and a user's own otherwise: the
settings ConfigMap and the Secrets, with a branch, registry, image and credentials no shipped file
names. The instance is k3d/dagster/dagster.yaml with its paths under a directory of this host and
the API found through KUBECONFIG (tests/cluster_harness.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.launcher.base import WorkerStatus
from dagster_k8s.job import get_job_name_from_run_id

from argocd_double import DUMMY_TOKEN
from cluster_harness import cluster_instance, on_host, write_instance
from daemon_harness import RUN_TIMEOUT, wait_finished, wait_for_run
from kubelet_double import SA_TOKEN_PREFIX, ImageConfig, KubeletDouble, PodRecord
from test_cluster_manifests import RUN_POD_GRANTS, one

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

NAMESPACE = "dagster"  # the instance's job_namespace
IMAGE = "registry.acme.test/platform/coelho-pipeline:3f2a9c1"
BRANCH = "deploy/k8s-jobs"
IMAGE_PATH = "acme/realtime"
SERVED = {"batch/v1/jobs": "Job", "v1/secrets": "Secret", "v1/configmaps": "ConfigMap",
          "v1/serviceaccounts": "ServiceAccount", "v1/persistentvolumeclaims": "PersistentVolumeClaim"}


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """Where the image's paths (/opt/dagster, /certs) are on this host, for the run pods' processes."""
    return tmp_path / "node"


@pytest.fixture
def instance_config(node: Path) -> dict[str, Any]:
    return cluster_instance(node, run_launcher=True)


@pytest.fixture
def source_branch() -> str:
    return BRANCH


@pytest.fixture
def dagster_yaml(tmp_path: Path, instance_config: dict[str, Any]) -> Path:
    return write_instance(tmp_path / "cluster-instance" / "dagster.yaml", instance_config)


@pytest.fixture
def user_secrets() -> dict[str, str]:
    return {"COELHO_GIT_TOKEN": secrets.token_hex(16), "COELHO_REGISTRY_PASSWORD": secrets.token_hex(16)}


@pytest.fixture
def dagster_dev_env(postgres_env: dict[str, str], registry_addr: str,
                    monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in postgres_env.items():  # the test's own DagsterInstance reads them too
        monkeypatch.setenv(key, value)
    # DAGSTER_CURRENT_IMAGE: the code server reports it as its image, as in the chart's user
    # deployment; the launcher gives it to the run's Job.
    return {**postgres_env, "COELHO_REGISTRY": f"{registry_addr}/{IMAGE_PATH}", "DAGSTER_CURRENT_IMAGE": IMAGE}


@pytest.fixture
def kubelet() -> Iterator[dict[str, KubeletDouble]]:
    """Holds the kubelet double `before_dagster_dev` starts; stops it (and its processes) at the end."""
    holder: dict[str, KubeletDouble] = {}
    yield holder
    if "double" in holder:
        holder["double"].stop()
        assert not holder["double"].errors, f"the kubelet double failed: {holder['double'].errors}"


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.fixture
def before_dagster_dev(kubelet, node: Path, instance_config: dict[str, Any], postgres_env: dict[str, str],
                       user_secrets: dict[str, str], registry_addr: str, docker_host: str,
                       base_images: dict[str, str]) -> Callable[..., None]:
    def prepare(repo, argocd, kubeconfig) -> None:
        for resource, kind in SERVED.items():
            argocd.serve_resource(resource, kind)
        # As shipped.
        argocd.put_object("v1/serviceaccounts", one("ServiceAccount", "coelho-pipeline-run"))
        argocd.put_object("v1/persistentvolumeclaims", one("PersistentVolumeClaim", "coelho-pipeline-state"))
        argocd.put_object("v1/configmaps", one("ConfigMap", "coelho-pipeline-targets"))
        # What the chart renders: the instance, as ConfigMap dagster-instance.
        argocd.put_object("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": "dagster-instance", "namespace": NAMESPACE},
                                            "data": {"dagster.yaml": yaml.safe_dump(instance_config)}})
        # The user's settings: the shipped ConfigMap's paths, this user's repository, registry and
        # engine. Without COELHO_TARGETS (the targets file is issue 10's first part) and without TLS:
        # the engine here is a unix socket.
        settings = on_host(one("ConfigMap", "coelho-pipeline-env")["data"], node)
        for key in ("COELHO_TARGETS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            del settings[key]
        settings.update({
            "COELHO_GIT_URL": repo.url, "COELHO_GIT_BRANCH": repo.branch, "DOCKER_HOST": docker_host,
            "COELHO_REGISTRY": f"{registry_addr}/{IMAGE_PATH}", "COELHO_REGISTRY_USERNAME": "delivery-bot",
            "COELHO_APPS": "fastapi,kafka_producers,sveltekit", "COELHO_BUILD_NETWORK": "host",
            "COELHO_BUILD_ARGS": " ".join(f"{k}={v}" for k, v in base_images.items()),
            "COELHO_SYNC_TIMEOUT": "60", "COELHO_ROLLOUT_TIMEOUT": "20", "COELHO_VERIFY_SOAK_SECONDS": "1",
            "COELHO_VERIFY_INTERVAL_SECONDS": "0.25"})
        argocd.put_object("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "data": settings,
                                            "metadata": {"name": "coelho-pipeline-env", "namespace": NAMESPACE}})
        # The user's Secrets.
        argocd.put_object("v1/secrets", secret("coelho-pipeline-secrets", user_secrets))
        argocd.put_object("v1/secrets", secret("dagster-postgresql",
                                               {"postgresql-password": postgres_env["DAGSTER_PG_PASSWORD"]}))
        argocd.put_object("v1/secrets", secret("dind-client-tls", {
            name: "unused here: this host's engine is reached over its unix socket\n"
            for name in ("ca.pem", "cert.pem", "key.pem")}))
        venv_bin = str(Path(sys.executable).parent)
        # The image as ./Dockerfile builds it (ENV, WORKDIR; no ENTRYPOINT), with its paths under `node`.
        image = ImageConfig(
            cmd=("dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "coelho_pipeline.definitions"),
            env=on_host({"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": "/opt/dagster",
                         "VIRTUAL_ENV": str(Path(venv_bin).parent), "DAGSTER_HOME": "/opt/dagster/dagster_home",
                         "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}, node),
            workdir=f"{node}/opt/dagster/app")
        kubelet["double"] = KubeletDouble(argocd.url, node, image=image, namespaces=(NAMESPACE,)).start()

    return prepare


def run_details(pod: PodRecord | None) -> str:
    if pod is None:
        return "no Pod"
    tail = pod.log_path.read_text()[-4000:] if pod.log_path and pod.log_path.is_file() else ""
    return f"pod {pod.name}: exit {pod.exit_code}, problem {pod.problem}\n{tail}"


def api_calls(argocd, token: str) -> set[tuple[str, str, str, str]]:
    """(namespace, apiGroup, resource, verb) of every request the API received with ``token``."""

    def read() -> list[tuple[str, str, str, str]]:
        out = []
        for request in list(argocd.emulator):
            if request.headers.get("Authorization") != f"Bearer {token}" or request.resource is None:
                continue
            method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
            if method == "GET":
                verb = "watch" if request.params.get("watch") in ("true", "1") else ("get" if request.name else "list")
            else:
                verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
            out.append((request.namespace or "", request.resource.group or "", request.resource.plural, verb))
        return out

    return set(argocd.call(read))


def test_a_push_is_delivered_by_a_kubernetes_job_the_launcher_creates(
        dagster_dev, kubelet, instance_config, postgres_env, user_secrets, node: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, instance, argocd, _ = dagster_dev
    double = kubelet["double"]
    seed = repo.head()

    run = wait_for_run(instance, seed)

    job_name = get_job_name_from_run_id(run.run_id)
    pod = double.wait_for_pod(NAMESPACE, job_name, ended=True)  # the run's record ends a moment before its process
    assert run.status == dg.DagsterRunStatus.SUCCESS, run_details(pod)
    assert pod.problem is None and pod.exit_code == 0, run_details(pod)
    # The delivery went all the way: manifest commit on the user's branch, Argo CD synced to it.
    manifest_sha, _, subject = repo.log(1)[0]
    assert subject == f"Update image tags to {seed} [skip ci]"
    sync = instance.get_latest_materialization_event(dg.AssetKey("argocd_sync"))
    assert sync.run_id == run.run_id
    assert sync.asset_materialization.metadata["revision"].value == manifest_sha
    assert argocd.application()["status"]["sync"]["revision"] == manifest_sha

    # The Job the launcher created, as stored in the API: a valid batch/v1 Job.
    job = pod.job_object
    kubernetes_validate.validate(job, "1.35.0", strict=True)
    launcher = instance_config["run_launcher"]["config"]
    pod_spec = job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["image"] == IMAGE and run.tags["dagster/image"] == IMAGE
    assert container["imagePullPolicy"] == launcher["image_pull_policy"]
    # Only args: the image has no ENTRYPOINT, so they are the command (and replace its CMD).
    assert "command" not in container and container["args"][:3] == ["dagster", "api", "execute_run"]
    assert pod.argv == container["args"]
    assert pod_spec["serviceAccountName"] == launcher["service_account_name"] == "coelho-pipeline-run"
    assert pod_spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["labels"]["coelho.dev/docker-client"] == "true"
    assert pod_spec["securityContext"] == {"fsGroup": 10001}
    assert container["securityContext"]["runAsUser"] == 10001
    assert container["resources"] == launcher["run_k8s_config"]["container_config"]["resources"]
    # The registry proxy is a native sidecar of the Pod (the double records it and does not run it).
    (sidecar,) = pod_spec["initContainers"]
    assert (sidecar["name"], sidecar["restartPolicy"]) == ("registry-proxy", "Always")
    assert pod.sidecars == ["registry-proxy"]
    # Secrets by reference only: envFrom names the ConfigMap and the Secret, the database password
    # is a secretKeyRef; no value of any Secret appears anywhere in the Job.
    assert container["envFrom"] == [{"configMapRef": {"name": "coelho-pipeline-env"}},
                                    {"secretRef": {"name": "coelho-pipeline-secrets"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_PG_PASSWORD"] == {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "dagster-postgresql", "key": "postgresql-password"}}}
    assert {k: env[k]["value"] for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB")} \
        == {k: postgres_env[k] for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB")}
    assert env["DAGSTER_HOME"]["value"] == launcher["dagster_home"]
    serialized = json.dumps(job)
    for value in (postgres_env["DAGSTER_PG_PASSWORD"], *user_secrets.values()):
        assert value not in serialized
    # The process got them through those references, resolved from the API's Secrets.
    assert pod.env["DAGSTER_PG_PASSWORD"] == postgres_env["DAGSTER_PG_PASSWORD"]
    assert {k: pod.env[k] for k in user_secrets} == user_secrets
    # The volumes: the instance ConfigMap at DAGSTER_HOME/dagster.yaml, the state claim, the targets, the certs.
    assert [v["name"] for v in pod_spec["volumes"]] == [v["name"] for v in launcher["volumes"]]
    assert container["volumeMounts"] == launcher["volume_mounts"]
    claim_dir = node / ".kubelet-double" / "claims" / NAMESPACE / "coelho-pipeline-state"
    assert any(claim_dir.rglob("*")), "the run wrote nothing to the state volume"

    # The Job's status as the Job controller leaves it, and as the launcher's monitoring reads it.
    kubeconfig = str(argocd.write_kubeconfig(node.parent / "reader-kubeconfig"))
    # The launcher of this process's instance loads the default kubeconfig, which the client took from
    # KUBECONFIG at import time.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    kubernetes.config.load_kube_config(kubeconfig)
    status = kubernetes.client.BatchV1Api().read_namespaced_job_status(job_name, NAMESPACE).status
    assert (status.active, status.succeeded, status.failed) == (None, 1, None)
    assert [c.type for c in status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.SUCCESS

    # Everything the run's pod asked the API, as its ServiceAccount: exactly what rbac.yaml grants.
    granted = {(ns, g, r, v) for ns, rules in RUN_POD_GRANTS.items() for g, r, v in rules}
    assert api_calls(argocd, f"{SA_TOKEN_PREFIX}{NAMESPACE}:coelho-pipeline-run") == granted
    # And the daemon (the launcher, with the kubeconfig of `dagster dev`) created the Job.
    assert (NAMESPACE, "batch", "jobs", "create") in api_calls(argocd, DUMMY_TOKEN)


def test_a_run_pod_that_dies_is_failed_by_monitoring_and_retried_from_the_failed_step_in_a_new_job(
        dagster_dev, kubelet) -> None:
    """The container is killed mid-delivery (an OOM kill, a lost node). The daemon's run monitoring
    reads the failed Job through the launcher and fails the run; run retries re-execute it from the
    failed step in a new Job, which reads what the first pod wrote from the state volume."""
    repo, instance, argocd, _ = dagster_dev
    double = kubelet["double"]
    seed = repo.head()
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:  # the first step succeeded (its output stored), the image builds under way
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": seed}))
        if runs and any(e.step_key == "source_commit"
                        for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)):
            break
        assert time.monotonic() < deadline, "source_commit never succeeded"
        time.sleep(0.2)
    first = runs[0]
    job_name = get_job_name_from_run_id(first.run_id)
    assert double.wait_for_pod(NAMESPACE, job_name).exit_code is None, "the run ended before it could be killed"

    double.kill(NAMESPACE, job_name)

    failed = wait_finished(instance, first.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert double.wait_for_pod(NAMESPACE, job_name, ended=True).exit_code == 137
    messages = [e.message for e in instance.all_logs(first.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
    assert any("Run has not completed but K8s job has no active pods" in m for m in messages), messages
    # No step failed: the run's worker was lost, so Dagster's run retries take it (not the sensor).
    assert not instance.all_logs(first.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)

    deadline = time.monotonic() + RUN_TIMEOUT
    while not (retries := instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": first.run_id}))):
        assert time.monotonic() < deadline, "the run was not retried"
        time.sleep(1)
    (retry,) = retries
    retry = wait_finished(instance, retry.run_id)
    retry_pod = double.wait_for_pod(NAMESPACE, get_job_name_from_run_id(retry.run_id), ended=True)
    assert retry.status == dg.DagsterRunStatus.SUCCESS, run_details(retry_pod)
    assert retry_pod.exit_code == 0 and retry_pod.name != double.pods[(NAMESPACE, job_name)].name
    assert retry.tags["dagster/retry_number"] == "1"  # Dagster's run retries (from the failure, their default)
    # source_commit ran once, in the killed pod; the retry loaded its value from the shared volume.
    started = {e.step_key for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.STEP_START)}
    assert "source_commit" not in started and "manifest_commit" in started
    loaded = [e for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.LOADED_INPUT)
              if e.dagster_event.event_specific_data.upstream_step_key == "source_commit"]
    assert loaded
    assert repo.log(1)[0][2] == f"Update image tags to {seed} [skip ci]"
