"""The rollout's Kubernetes reads fail with messages that name the object, and never hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from coelho_pipeline.dev import services
from coelho_pipeline.resources.argocd import ArgoCDClient
from coelho_pipeline.rollout.workloads import DeploymentState, WorkloadError, WorkloadReader
from git_http import BlackHole


def reader_for(host: str) -> WorkloadReader:
    configuration = k8s_client.Configuration()
    configuration.host = host
    configuration.retries = False
    return WorkloadReader(k8s_client.ApiClient(configuration), request_timeout=(1.0, 0.5))


DEPLOYMENT = DeploymentState("coelho-realtime", "coelho-realtime-fastapi", 1, 1, 1, 1, 1, 1, 1,
                             {"app.kubernetes.io/component": "fastapi"}, None)


@pytest.mark.parametrize("read", [
    lambda r: r.deployments([("coelho-realtime", "coelho-realtime-fastapi")]),
    lambda r: r.container_restarts([DEPLOYMENT]),
])
def test_a_hung_api_is_a_transient_error_naming_the_object_and_the_bound(read) -> None:
    with BlackHole() as hole:
        started = time.monotonic()
        with pytest.raises(WorkloadError) as info:
            read(reader_for(f"http://{hole.address}"))
    assert info.value.transient is True
    assert "coelho-realtime/coelho-realtime-fastapi" in str(info.value) and "0.5s read timeout" in str(info.value)
    assert time.monotonic() - started < 10


def test_an_unreachable_api_is_transient() -> None:
    with pytest.raises(WorkloadError) as info:
        reader_for(f"http://127.0.0.1:{services.free_port()}").deployments([("ns", "api")])
    assert info.value.transient is True
    assert "cannot reach the Kubernetes API to list Deployments in namespace ns (for ns/api)" in str(info.value)


def _client_requests(double: ArgoCDControllerDouble) -> list[tuple[str, str]]:
    """(method, path) of every request the official client sent to kmock (the double writes through its own)."""
    return double.call(lambda: [(str(r.method.value), r.url.path) for r in list(double.emulator)
                                if str(r.headers.get("User-Agent", "")).startswith("OpenAPI-Generator")])


def test_every_deployment_and_its_restarts_cost_one_list_call_each(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
    tmp_path: Path,
) -> None:
    double = make_argocd_double(sync_delay=0.05, health_delay=0.1)
    client = make_argocd_client(double)
    sha = deploy_repo.commit_tags("v1")
    client.sync(revision=sha, poll_interval=0.05)
    client.wait_synced(revision=sha, timeout=15, poll_interval=0.05)
    fastapi = APPS["fastapi"][1]
    double.crash_loop(fastapi, every=0.1)
    api = k8s_config.new_client_from_config(config_file=str(double.write_kubeconfig(tmp_path / "kube")),
                                            context="kmock")
    reader = WorkloadReader(api, request_timeout=(5, 5))
    refs = [(DEPLOY_NAMESPACE, name) for _, name in APPS.values()][::-1]
    double.wait_for(lambda: sum(c.restarts for c in reader.container_restarts(reader.deployments(refs))
                                [f"{DEPLOY_NAMESPACE}/{fastapi}"]) >= 2, timeout=10, interval=0.05)

    before = len(_client_requests(double))
    states = reader.deployments(refs)
    restarts = reader.container_restarts(states)
    calls = _client_requests(double)[before:]

    assert [(s.namespace, s.name) for s in states] == refs  # in the order asked
    assert all(s.problem() is None for s in states)
    assert calls == [("GET", f"/apis/apps/v1/namespaces/{DEPLOY_NAMESPACE}/deployments"),
                     ("GET", f"/api/v1/namespaces/{DEPLOY_NAMESPACE}/pods")]
    # Each Deployment gets its own Pods' containers only, although one list brought all of them.
    pods = {ref: {c.pod for c in found} for ref, found in restarts.items()}
    assert all(pods.values()) and sum(len(p) for p in pods.values()) == len(set().union(*pods.values()))
    assert sum(c.restarts for c in restarts[f"{DEPLOY_NAMESPACE}/{fastapi}"]) >= 2
    assert all(c.restarts == 0 for ref, found in restarts.items() if not ref.endswith(fastapi) for c in found)

    with pytest.raises(WorkloadError) as info:
        reader.deployments([*refs, (DEPLOY_NAMESPACE, "coelho-realtime-gone")])
    assert info.value.transient is False
    assert str(info.value) == f"Deployment {DEPLOY_NAMESPACE}/coelho-realtime-gone not found (the Application lists it)"
    api.close()
