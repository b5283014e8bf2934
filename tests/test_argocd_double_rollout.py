"""The Argo CD double's Deployment/ReplicaSet/kubelet emulation, read through the official client.

``tests/argocd_double.py`` is a TEST DOUBLE (kmock on 127.0.0.1, real Git): these tests check that
what it writes about a rollout (``metadata.generation``, Deployment ``status``, Pods) reads like a
cluster's through ``AppsV1Api``/``CoreV1Api``, in step with the Application's health, and that its
switches (``stall_rollout``, ``crash_loop``) look like the failures they stand for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argocd_double import ArgoCDControllerDouble
from argocd_fixtures import (  # noqa: F401 - fixtures
    APPS,
    DEPLOY_NAMESPACE,
    DeployRepo,
    deploy_repo,
    make_argocd_client,
    make_argocd_double,
)
from kubernetes import config as k8s_config
from kubernetes.client import ApiException, AppsV1Api, CoreV1Api, V1Deployment, V1Pod

from coelho_pipeline.resources.argocd import ArgoCDClient

POLL = 0.05
TIMEOUT = (5, 5)  # (connect, read) seconds, as production passes _request_timeout
FASTAPI = APPS["fastapi"][1]
# Generated name parts use Kubernetes' alphabet: no vowels, no 0, 1 or 3.
NAME_PART = "[bcdfghjklmnpqrstvwxz2456789]"


class Kube:
    """The official client on the double's kubeconfig: the reads production code makes."""

    def __init__(self, double: ArgoCDControllerDouble, kubeconfig: Path) -> None:
        self.api_client = k8s_config.new_client_from_config(config_file=str(double.write_kubeconfig(kubeconfig)),
                                                            context="kmock")
        self.apps = AppsV1Api(self.api_client)
        self.core = CoreV1Api(self.api_client)

    def deployment(self, name: str) -> V1Deployment:
        return self.apps.read_namespaced_deployment(name, DEPLOY_NAMESPACE, _request_timeout=TIMEOUT)

    def pods_of(self, name: str) -> list[V1Pod]:
        """The Deployment's Pods by its selector, filtered here too (kmock ignores selectors)."""
        match = self.deployment(name).spec.selector.match_labels
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        listed = self.core.list_namespaced_pod(DEPLOY_NAMESPACE, label_selector=selector, _request_timeout=TIMEOUT)
        return sorted((p for p in listed.items if all((p.metadata.labels or {}).get(k) == v for k, v in match.items())),
                      key=lambda p: p.metadata.name)

    def restarts(self, name: str) -> int:
        return sum(s.restart_count for p in self.pods_of(name) for s in p.status.container_statuses or ())


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Callable[[ArgoCDControllerDouble], Kube]]:
    made: list[Kube] = []

    def make(double: ArgoCDControllerDouble) -> Kube:
        made.append(Kube(double, tmp_path / f"kube-{len(made)}"))
        return made[-1]

    yield make
    for k in made:
        k.api_client.close()


def conditions(dep: V1Deployment) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions or ()}


def complete(dep: V1Deployment) -> bool:
    """The verification's rule: observed, every wanted replica updated and available, no deadline."""
    st = dep.status
    return (
        st is not None
        and (st.observed_generation or 0) >= dep.metadata.generation
        and (st.updated_replicas or 0) == dep.spec.replicas
        and (st.available_replicas or 0) >= dep.spec.replicas
        and conditions(dep).get("Progressing") != ("False", "ProgressDeadlineExceeded")
    )


def deploy(client: ArgoCDClient, repo: DeployRepo, tag: str | dict[str, str]) -> str:
    sha = repo.commit_tags(tag)
    client.sync(revision=sha, poll_interval=POLL)
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    return sha


def wait(double: ArgoCDControllerDouble, predicate: Callable[[], Any], timeout: float = 10) -> None:
    double.wait_for(lambda: bool(predicate()), timeout=timeout, interval=POLL / 2)


def test_generation_and_status_follow_a_sync_and_finish_with_healthy(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=2.0)
    client, k = make_argocd_client(double), kube(double)

    # Creation: generation 1, observed at once, nothing available yet.
    sha = deploy_repo.commit_tags("v1")
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: client.status().operation_phase == "Succeeded")
    dep = k.deployment(FASTAPI)
    assert (dep.metadata.generation, dep.status.observed_generation) == (1, 1)
    assert dep.spec.replicas == 1
    # Zero counts are omitted, as the API server omits them: the official client reads None.
    assert (dep.status.updated_replicas, dep.status.available_replicas, dep.status.replicas) == (None, None, None)
    assert dep.status.unavailable_replicas == 1
    assert conditions(dep) == {"Available": ("False", "MinimumReplicasUnavailable"),
                               "Progressing": ("True", "ReplicaSetUpdated")}
    assert client.status().health_status == "Progressing"
    assert not complete(dep)

    # Healthy comes with, never before, the finished rollout.
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    for name in double.deployments():
        dep = k.deployment(name)
        assert complete(dep), name
        st = dep.status
        assert (st.replicas, st.updated_replicas, st.ready_replicas, st.available_replicas) == (1, 1, 1, 1)
        assert st.unavailable_replicas is None
        assert conditions(dep) == {"Available": ("True", "MinimumReplicasAvailable"),
                                   "Progressing": ("True", "NewReplicaSetAvailable")}
    first_hash = k.pods_of(FASTAPI)[0].metadata.labels["pod-template-hash"]
    progressing = next(c for c in k.deployment(FASTAPI).status.conditions if c.type == "Progressing")
    assert progressing.message == f'ReplicaSet "{FASTAPI}-{first_hash}" has successfully progressed.'

    # An image change: generation 2 in the same write, the old Pod still serving.
    sha2 = deploy_repo.commit_tags({"fastapi": "v2"})
    client.sync(revision=sha2, poll_interval=POLL)
    wait(double, lambda: k.deployment(FASTAPI).metadata.generation == 2)
    dep = k.deployment(FASTAPI)
    assert dep.spec.template.spec.containers[0].image == deploy_repo.images({**deploy_repo.tags})[FASTAPI]
    wait(double, lambda: k.deployment(FASTAPI).status.observed_generation == 2)
    st = k.deployment(FASTAPI).status
    assert (st.updated_replicas, st.available_replicas, st.replicas, st.unavailable_replicas) == (None, 1, 1, 1)
    assert conditions(k.deployment(FASTAPI)) == {"Available": ("True", "MinimumReplicasAvailable"),
                                                 "Progressing": ("True", "ReplicaSetUpdated")}
    assert not complete(k.deployment(FASTAPI))
    # Unchanged Deployments keep their generation and stay complete.
    other = k.deployment(APPS["sveltekit"][1])
    assert other.metadata.generation == 1 and complete(other)

    client.wait_synced(revision=sha2, timeout=15, poll_interval=POLL)
    dep = k.deployment(FASTAPI)
    assert (dep.metadata.generation, dep.status.observed_generation) == (2, 2) and complete(dep)
    phases = [e.detail["phase"] for e in double.events_of("rollout") if e.detail["deployment"].endswith(FASTAPI)]
    assert phases == ["started", "complete", "started", "complete"]


def test_pods_are_listed_by_the_official_client_and_replaced_on_a_new_image(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=2.0)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")

    (pod,) = k.pods_of(FASTAPI)
    template = k.deployment(FASTAPI).spec.template
    pod_hash = pod.metadata.labels["pod-template-hash"]
    assert re.fullmatch(f"{FASTAPI}-{NAME_PART}{{10}}-{NAME_PART}{{5}}", pod.metadata.name)
    assert pod.metadata.name.startswith(f"{FASTAPI}-{pod_hash}-")
    assert pod.metadata.labels == {**template.metadata.labels, "pod-template-hash": pod_hash}
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    assert pod.metadata.owner_references[0].name == f"{FASTAPI}-{pod_hash}"
    assert pod.status.phase == "Running"
    (cs,) = pod.status.container_statuses
    assert (cs.name, cs.image, cs.ready, cs.restart_count) == (
        template.spec.containers[0].name, deploy_repo.images("v1")[FASTAPI], True, 0)
    assert cs.state.running.started_at is not None and cs.image_id.endswith(tuple("0123456789abcdef"))
    assert {c.type for c in pod.status.conditions if c.status == "True"} >= {"Ready", "ContainersReady"}
    # One Pod per Deployment, and the double's reader agrees with the API.
    assert sorted(double.pods()) == sorted(p.metadata.name for name in double.deployments() for p in k.pods_of(name))
    assert len(double.pods()) == len(APPS)

    # A new image: the old Pod keeps running until the new one is up, then it is gone.
    sha = deploy_repo.commit_tags({"fastapi": "v2"})
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: k.deployment(FASTAPI).status.observed_generation == 2)
    assert [p.metadata.name for p in k.pods_of(FASTAPI)] == [pod.metadata.name]
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    (new,) = k.pods_of(FASTAPI)
    assert new.metadata.name != pod.metadata.name
    assert new.metadata.labels["pod-template-hash"] != pod_hash
    assert new.status.container_statuses[0].image == deploy_repo.images({**deploy_repo.tags})[FASTAPI]
    assert new.status.container_statuses[0].restart_count == 0
    with pytest.raises(ApiException) as exc:
        k.core.read_namespaced_pod(pod.metadata.name, DEPLOY_NAMESPACE, _request_timeout=TIMEOUT)
    assert exc.value.status == 404

    # A deleted Pod is replaced (the ReplicaSet keeps its count).
    double.delete_object("v1/pods", new.metadata.name)
    wait(double, lambda: [p.metadata.name for p in k.pods_of(FASTAPI)] not in ([], [new.metadata.name]))
    (replacement,) = k.pods_of(FASTAPI)
    assert replacement.metadata.labels["pod-template-hash"] == new.metadata.labels["pod-template-hash"]


def test_a_spec_change_from_a_client_gets_its_generation_from_the_controller(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=2.0)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")

    # kubectl scale through the API: kmock does not bump generation; the double's controller does.
    k.apps.patch_namespaced_deployment(FASTAPI, DEPLOY_NAMESPACE, {"spec": {"replicas": 3}}, _request_timeout=TIMEOUT)
    wait(double, lambda: k.deployment(FASTAPI).metadata.generation == 2)
    wait(double, lambda: complete(k.deployment(FASTAPI)))
    dep = k.deployment(FASTAPI)
    assert (dep.status.observed_generation, dep.status.updated_replicas, dep.status.available_replicas) == (2, 3, 3)
    assert len(k.pods_of(FASTAPI)) == 3

    # A live edit (drift) rolls out the same way; the Application's health is not touched.
    double.set_live_image(FASTAPI, "127.0.0.1:5000/someone/hotfix:1")
    dep = k.deployment(FASTAPI)
    assert dep.metadata.generation == 3 and not complete(dep)
    assert client.status().health_status == "Healthy"
    wait(double, lambda: complete(k.deployment(FASTAPI)))
    assert {p.status.container_statuses[0].image for p in k.pods_of(FASTAPI)} == {"127.0.0.1:5000/someone/hotfix:1"}


def test_a_forced_sync_replaces_the_deployment_and_its_pods(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=0.3)
    client, k = make_argocd_client(double), kube(double)
    sha = deploy(client, deploy_repo, "v1")
    before = k.deployment(FASTAPI)
    (old_pod,) = k.pods_of(FASTAPI)

    client.sync(revision=sha, poll_interval=POLL, force=True)  # --force --replace: Replace=true
    def replaced() -> bool:
        try:
            return k.deployment(FASTAPI).metadata.uid != before.metadata.uid
        except ApiException as e:  # between the delete and the create
            if e.status == 404:
                return False
            raise

    wait(double, replaced)
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    dep = k.deployment(FASTAPI)
    # A new object: generation starts again at 1, and the old Pods went with the old object.
    assert (dep.metadata.generation, dep.status.observed_generation) == (1, 1) and complete(dep)
    (pod,) = k.pods_of(FASTAPI)
    assert pod.metadata.name != old_pod.metadata.name


def test_stall_rollout_exceeds_the_progress_deadline_and_degrades_the_application(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=0.3)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")
    (old_pod,) = k.pods_of(FASTAPI)

    double.stall_rollout(FASTAPI)
    assert complete(k.deployment(FASTAPI))  # the finished rollout is not affected: the next one is
    sha = deploy_repo.commit_tags("v2")
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: client.status().health_status == "Degraded")

    st = client.status()
    assert (st.sync_status, st.revision, st.operation_phase) == ("Synced", sha, "Succeeded")
    assert st.health_message == f'Deployment "{FASTAPI}" exceeded its progress deadline'
    dep = k.deployment(FASTAPI)
    assert (dep.metadata.generation, dep.status.observed_generation) == (2, 2)
    assert (dep.status.updated_replicas, dep.status.available_replicas) == (None, 1)  # only the old Pod
    (progressing,) = [c for c in dep.status.conditions if c.type == "Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert re.fullmatch(f'ReplicaSet "{FASTAPI}-{NAME_PART}{{10}}" has timed out progressing.', progressing.message)
    assert old_pod.metadata.labels["pod-template-hash"] not in progressing.message  # the new ReplicaSet's name
    assert not complete(dep)
    assert [p.metadata.name for p in k.pods_of(FASTAPI)] == [old_pod.metadata.name]
    # The others finished their rollouts.
    assert complete(k.deployment(APPS["sveltekit"][1])) and complete(k.deployment(APPS["kafkaProducers"][1]))
    # It stays so: nothing finishes the stalled rollout by itself.
    time.sleep(0.4)
    assert client.status().health_status == "Degraded" and not complete(k.deployment(FASTAPI))

    double.unstall_rollout(FASTAPI)
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    dep = k.deployment(FASTAPI)
    assert complete(dep)
    assert conditions(dep)["Progressing"] == ("True", "NewReplicaSetAvailable")
    assert k.pods_of(FASTAPI)[0].status.container_statuses[0].image == deploy_repo.images("v2")[FASTAPI]


def test_stall_rollout_on_creation_with_a_message(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=0.2)
    client, k = make_argocd_client(double), kube(double)
    double.stall_rollout(FASTAPI, "quota exceeded")  # before the Deployment exists
    sha = deploy_repo.commit_tags("v1")
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: client.status().health_status == "Degraded")
    dep = k.deployment(FASTAPI)
    assert conditions(dep) == {"Available": ("False", "MinimumReplicasUnavailable"),
                               "Progressing": ("False", "ProgressDeadlineExceeded")}
    assert next(c.message for c in dep.status.conditions if c.type == "Progressing") == "quota exceeded"
    assert dep.status.available_replicas is None and k.pods_of(FASTAPI) == []


def test_crash_loop_grows_restart_count_while_everything_stays_healthy(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=0.3)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")
    svelte = APPS["sveltekit"][1]
    assert k.restarts(FASTAPI) == 0

    double.crash_loop(FASTAPI, every=0.1)
    wait(double, lambda: k.restarts(FASTAPI) >= 3)
    (pod,) = k.pods_of(FASTAPI)
    cs = pod.status.container_statuses[0]
    assert cs.last_state.terminated.exit_code == 1 and cs.state.running is not None and cs.ready
    # Argo CD's health and the Deployment's status do not look at restarts.
    assert client.status().health_status == "Healthy"
    assert complete(k.deployment(FASTAPI))
    assert k.restarts(svelte) == 0

    double.stop_crash_loop(FASTAPI)
    settled = k.restarts(FASTAPI)
    time.sleep(0.4)
    assert k.restarts(FASTAPI) == settled  # counts stay, as the kubelet's do

    # A new rollout starts from 0 on new Pods; a crash loop carries over to later rollouts.
    deploy(client, deploy_repo, {"fastapi": "v2"})
    (new,) = k.pods_of(FASTAPI)
    assert new.metadata.name != pod.metadata.name and k.restarts(FASTAPI) == 0
    double.crash_loop(FASTAPI, every=0.1)
    deploy(client, deploy_repo, {"fastapi": "v3"})
    wait(double, lambda: k.restarts(FASTAPI) >= 2)
    assert client.status().health_status == "Healthy" and complete(k.deployment(FASTAPI))


def test_stale_health_after_sync_shows_the_rollout_still_in_progress(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    # The kargo#41 race: Synced + (stale) Healthy while the Deployment is still rolling out; the
    # rollout finishes when the Application turns Healthy for real.
    double = make_argocd_double(sync_delay=0.05, health_delay=0.3, stale_health_after_sync=True,
                                stale_health_seconds=0.8)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")
    sha = deploy_repo.commit_tags("v2")
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: client.status().operation_phase == "Succeeded" and client.status().revision == sha)
    st = client.status()
    assert (st.sync_status, st.health_status, st.health_is_stale) == ("Synced", "Healthy", True)
    assert not complete(k.deployment(FASTAPI))

    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert all(complete(k.deployment(name)) for name in double.deployments())


def test_recover_after_degrade_waits_for_the_rollout(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    # A rollout long enough that a loaded machine still reads it in progress after recover().
    double = make_argocd_double(sync_delay=0.05, health_delay=4.0)
    client, k = make_argocd_client(double), kube(double)
    deploy(client, deploy_repo, "v1")
    double.degrade()
    sha = deploy_repo.commit_tags("v2")
    client.sync(revision=sha, poll_interval=POLL)
    wait(double, lambda: client.status().health_status == "Degraded" and client.status().revision == sha)
    assert not complete(k.deployment(FASTAPI))
    double.recover()
    # Not Healthy while the Deployments are still rolling out (4 s from the sync).
    assert client.status().health_status == "Progressing"
    client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert all(complete(k.deployment(name)) for name in double.deployments())


def test_healthy_is_never_read_before_the_deployments_are_complete(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    kube: Callable[[ArgoCDControllerDouble], Kube],
    deploy_repo: DeployRepo,
) -> None:
    # What the verification relies on: once Argo CD says Synced + Healthy (fresh) at a revision,
    # a Deployment read afterwards shows the finished rollout. Short delays make the race likely.
    double = make_argocd_double(sync_delay=0.02, health_delay=0.05)
    client, k = make_argocd_client(double), kube(double)
    healthy_reads = 0
    for tag in ("v1", "v2", "v3"):
        sha = deploy_repo.commit_tags(tag)
        client.sync(revision=sha, poll_interval=POLL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = client.status()  # first the Application, then the Deployment
            if (st.revision, st.sync_status, st.health_status) == (sha, "Synced", "Healthy") \
                    and st.operation_phase == "Succeeded" and not st.health_is_stale:
                dep = k.deployment(FASTAPI)
                assert complete(dep), dep.status
                assert dep.spec.template.spec.containers[0].image == deploy_repo.images(tag)[FASTAPI]
                healthy_reads += 1
                break
        else:
            pytest.fail(f"never Healthy at {tag}")
    assert healthy_reads == 3
