"""ArgoCDClient against the Argo CD controller double (kmock over HTTP, real Git), plus unit tests.

Most tests run the real official client over HTTP against ``ArgoCDControllerDouble`` on
127.0.0.1 in real time with small delays; the deploy repo is a real bare Git repository read by
``git ls-remote``/``git fetch``. A scripted fake API and a fake clock are used only where they make
a case deterministic (timeouts, error translation, waiting on scripted status sequences).
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from argocd_double import ArgoCDControllerDouble, LabelSelector, application_from_yaml
from argocd_fixtures import (  # noqa: F401 - fixtures
    APP_NAME,
    APP_NAMESPACE,
    DEPLOY_NAMESPACE,
    DeployRepo,
    application_manifest,
    argocd_client,
    argocd_double,
    deploy_repo,
    git,
    make_argocd_client,
    make_argocd_double,
)
from kubernetes.client import ApiException, AppsV1Api

from coelho_pipeline.dev import services
from coelho_pipeline.resources.argocd import (
    REFRESH_ANNOTATION,
    ApplicationNotFound,
    AppStatus,
    ArgoCDClient,
    ArgoCDError,
    ArgoCDPermissionError,
    ArgoCDResource,
    SyncFailed,
    SyncTimeout,
    assess,
    parse_timestamp,
)

POLL = 0.05


def test_refresh_is_seen_and_removed(argocd_double: ArgoCDControllerDouble, argocd_client: ArgoCDClient,
                                     deploy_repo: DeployRepo) -> None:
    before = argocd_client.status()
    assert before.revision == deploy_repo.shas[0]
    assert before.sync_status == "OutOfSync"  # nothing deployed yet
    assert before.health_status == "Missing"

    new_sha = deploy_repo.commit_tags("v1")
    argocd_client.refresh()
    argocd_double.wait_for(lambda: argocd_client.status().refresh_requested is None, timeout=5)

    after = argocd_client.status()
    assert after.revision == new_sha
    assert after.reconciled_at is not None and before.reconciled_at is not None
    assert after.reconciled_at > before.reconciled_at
    assert REFRESH_ANNOTATION not in (argocd_double.application()["metadata"].get("annotations") or {})
    refreshes = argocd_double.events_of("refresh")
    assert refreshes[-1].detail["reason"] == "refresh=normal"

    argocd_client.refresh(hard=True)
    argocd_double.wait_for(lambda: argocd_double.events_of("refresh")[-1].detail["reason"] == "refresh=hard", timeout=5)


def test_sync_then_wait_returns_synced_healthy_at_the_exact_revision(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    retry = {"limit": 2, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "1m"}}
    manifest = application_manifest(deploy_repo.url)
    manifest["spec"]["syncPolicy"]["retry"] = retry
    double = make_argocd_double(manifest=manifest)
    client = make_argocd_client(double)

    sha = deploy_repo.commit_tags("abc1234")
    client.refresh(hard=True)
    client.sync(revision=sha, info={"pipeline-run": "run-42"}, poll_interval=POLL)
    result = client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)

    st = result.status
    assert (st.sync_status, st.revision, st.health_status, st.operation_phase) == ("Synced", sha, "Healthy", "Succeeded")
    assert st.operation_revision == sha
    assert st.operation_finished_at is not None and st.reconciled_at is not None
    assert st.reconciled_at >= st.operation_finished_at
    assert st.images == tuple(sorted(deploy_repo.images("abc1234").values()))
    assert st.out_of_sync_resources == ()
    assert st.conditions == ()
    assert not st.operation_requested
    assert 0 < result.seconds < 15
    assert f"revision={sha}" in st.describe() and "\n" not in st.describe()

    app = double.application()
    assert "operation" not in app  # the controller cleared it when the operation completed
    op = app["status"]["operationState"]["operation"]
    assert op["initiatedBy"] == {"username": "coelho-pipeline"}
    assert op["info"] == [{"name": "pipeline-run", "value": "run-42"}]
    assert op["sync"] == {"revision": sha, "syncOptions": ["CreateNamespace=true"]}
    assert op["retry"] == retry
    assert app["status"]["history"][-1]["revision"] == sha
    assert app["status"]["history"][-1]["initiatedBy"] == {"username": "coelho-pipeline"}

    expected = {name: (image,) for name, image in deploy_repo.images("abc1234").items()}
    assert client.deployment_images(namespace=DEPLOY_NAMESPACE) == expected


def test_stale_health_race_is_not_passed_early(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(stale_health_after_sync=True, stale_health_seconds=0.6, health_delay=0.3)
    client = make_argocd_client(double)
    first = deploy_repo.commit_tags("v1")
    client.sync(revision=first, poll_interval=POLL)
    client.wait_synced(revision=first, timeout=15, poll_interval=POLL)  # Healthy at v1: the state to go stale

    seen: list[AppStatus] = []
    read = client.status

    def recording_status() -> AppStatus:
        st = read()
        seen.append(st)
        return st

    client.status = recording_status  # type: ignore[method-assign]
    second = deploy_repo.commit_tags("v2")
    client.refresh()
    client.sync(revision=second, poll_interval=POLL)
    result = client.wait_synced(revision=second, timeout=15, poll_interval=POLL)
    returned_at = time.monotonic()

    # The race was really shown to the waiter: Synced + Healthy at the new revision, health older
    # than the end of the sync. A checker without the guard (A5's naive version) passes here.
    stale = [s for s in seen if s.health_is_stale and s.operation_phase == "Succeeded"]
    assert stale, "the double never showed the stale-health state"
    assert any(s.revision == second and s.sync_status == "Synced" and s.health_status == "Healthy" for s in stale)

    st = result.status
    assert st.reconciled_at is not None and st.operation_finished_at is not None
    assert st.reconciled_at >= st.operation_finished_at
    assert st.health_status == "Healthy" and st.revision == second
    # The waiter asked for a refresh because of the guard, and returned only after fresh Healthy.
    finished = [e for e in double.events_of("operation-finished") if e.detail.get("revision") == second][-1]
    guard_refreshes = [e for e in double.events_of("refresh") if e.at > finished.at]
    assert guard_refreshes and guard_refreshes[0].detail["health"] == "Progressing"
    healthy = [e for e in double.events_of("health") if e.at > finished.at and e.detail["status"] == "Healthy"]
    assert healthy and returned_at >= healthy[0].at


def test_whole_second_timestamps_do_not_fool_or_stall_the_guard(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    # Kubernetes writes whole seconds: a comparison 0.2 s before finishedAt shows the same second.
    double = make_argocd_double(whole_second_timestamps=True, sync_delay=0.05, health_delay=0.05)
    client = make_argocd_client(double)
    sha = deploy_repo.commit_tags("v1")
    client.sync(revision=sha, poll_interval=POLL)
    result = client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    st = result.status
    assert st.reconciled_at is not None and st.operation_finished_at is not None
    assert st.reconciled_at > st.operation_finished_at  # an equal second was refreshed past
    assert result.seconds < 5


def test_failed_operation_raises_sync_failed_with_the_message(
    argocd_double: ArgoCDControllerDouble, argocd_client: ArgoCDClient, deploy_repo: DeployRepo
) -> None:
    sha = deploy_repo.commit_tags("v1")
    argocd_double.fail_next_sync("Deployment.apps \"coelho-realtime-fastapi\" is invalid: image pull secret missing")
    argocd_client.sync(revision=sha, poll_interval=POLL)
    with pytest.raises(SyncFailed) as exc:
        argocd_client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert "image pull secret missing" in str(exc.value)
    assert f"{APP_NAMESPACE}/{APP_NAME}" in str(exc.value)
    assert exc.value.status.operation_phase == "Failed"
    assert exc.value.status.operation_revision == sha
    assert argocd_double.live_images() == {}  # nothing was applied

    # The next sync of the same revision goes through (the switch is one-shot).
    argocd_client.sync(revision=sha, poll_interval=POLL)
    assert argocd_client.wait_synced(revision=sha, timeout=15, poll_interval=POLL).status.health_status == "Healthy"


def test_comparison_error_condition_fails_at_once(argocd_double: ArgoCDControllerDouble,
                                                  argocd_client: ArgoCDClient, deploy_repo: DeployRepo) -> None:
    sha = deploy_repo.commit_tags("v1")
    argocd_double.add_condition("ComparisonError", "rpc error: code = Unknown desc = repository not accessible")
    started = time.monotonic()
    with pytest.raises(SyncFailed, match="repository not accessible"):
        argocd_client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert time.monotonic() - started < 5


def test_unresolvable_target_revision_is_a_comparison_error(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    manifest = application_manifest(deploy_repo.url)
    manifest["spec"]["source"]["targetRevision"] = "no-such-branch"
    client = make_argocd_client(make_argocd_double(manifest=manifest))
    st = client.status()
    assert st.sync_status == "Unknown"
    assert st.error_conditions and "no-such-branch" in st.error_conditions[0][1]
    with pytest.raises(SyncFailed, match="ComparisonError"):
        client.wait_synced(revision=deploy_repo.shas[0], timeout=5, poll_interval=POLL)


def test_timeout_raises_sync_timeout_with_the_last_status(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(health_delay=60)  # the rollout never finishes within the test
    client = make_argocd_client(double)
    sha = deploy_repo.commit_tags("v1")
    client.sync(revision=sha, poll_interval=POLL)
    with pytest.raises(SyncTimeout) as exc:
        client.wait_synced(revision=sha, timeout=1.0, poll_interval=POLL)
    err = exc.value
    assert err.timeout == 1.0
    assert err.status is not None and err.status.health_status == "Progressing"
    assert err.status.describe() in str(err)
    assert "health=Progressing" in str(err) and sha in str(err) and f"{APP_NAMESPACE}/{APP_NAME}" in str(err)


def test_degraded_at_the_revision_waits_then_fails_with_the_health(
    argocd_double: ArgoCDControllerDouble, argocd_client: ArgoCDClient, deploy_repo: DeployRepo
) -> None:
    sha = deploy_repo.commit_tags("v1")
    argocd_double.degrade("Deployment coelho-realtime-fastapi exceeded its progress deadline")
    argocd_client.sync(revision=sha, poll_interval=POLL)
    started = time.monotonic()
    with pytest.raises(SyncFailed) as exc:
        argocd_client.wait_synced(revision=sha, timeout=1.5, poll_interval=POLL)
    assert time.monotonic() - started >= 1.5  # kept waiting: pods may still become Healthy
    assert "Degraded" in str(exc.value) and "progress deadline" in str(exc.value) and "timeout" in str(exc.value)
    assert exc.value.status.health_status == "Degraded" and exc.value.status.revision == sha


def test_degraded_that_recovers_is_waited_for(
    argocd_double: ArgoCDControllerDouble, argocd_client: ArgoCDClient, deploy_repo: DeployRepo
) -> None:
    sha = deploy_repo.commit_tags("v1")
    argocd_double.degrade("readiness probe failed")
    argocd_client.sync(revision=sha, poll_interval=POLL)
    argocd_double.wait_for(lambda: bool(argocd_double.events_of("operation-finished")), timeout=5)
    timer = threading.Timer(0.8, argocd_double.recover)
    timer.start()
    try:
        result = argocd_client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    finally:
        timer.cancel()
    assert result.status.health_status == "Healthy"
    assert result.seconds >= 0.5


def test_missing_application_is_named(argocd_double: ArgoCDControllerDouble,
                                      make_argocd_client: Callable[..., ArgoCDClient]) -> None:
    client = make_argocd_client(argocd_double, app_name="no-such-app")
    for call in (
        client.status,
        client.refresh,
        lambda: client.sync(revision="0" * 40),
        lambda: client.wait_synced(revision="0" * 40, timeout=5),
    ):
        with pytest.raises(ApplicationNotFound) as exc:
            call()
        assert "argocd/no-such-app" in str(exc.value)
        assert exc.value.status_code == 404 and not exc.value.transient


def test_deployment_images_and_drift(argocd_double: ArgoCDControllerDouble, argocd_client: ArgoCDClient,
                                     deploy_repo: DeployRepo) -> None:
    sha = deploy_repo.commit_tags({"fastapi": "f1", "kafkaProducers": "k1", "sveltekit": "s1"})
    argocd_client.sync(revision=sha, poll_interval=POLL)
    argocd_client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    images = deploy_repo.images({"fastapi": "f1", "kafkaProducers": "k1", "sveltekit": "s1"})
    assert argocd_client.deployment_images(namespace=DEPLOY_NAMESPACE) == {n: (i,) for n, i in images.items()}

    # The selector goes to the API server (kmock ignores it; a real apiserver applies it, as
    # the double's LabelSelector does here to what was listed).
    selector = "app.kubernetes.io/component in (fastapi,sveltekit)"
    argocd_client.deployment_images(namespace=DEPLOY_NAMESPACE, label_selector=selector)
    listed = [r for r in argocd_double.call(lambda: list(argocd_double.emulator)) if r.params.get("labelSelector")]
    assert [r.params["labelSelector"] for r in listed] == [selector]
    parsed = LabelSelector.parse(selector)
    matching = {name for name, d in argocd_double.deployments().items() if parsed.matches(d["metadata"]["labels"])}
    assert matching == {"coelho-realtime-fastapi", "coelho-realtime-sveltekit"}
    assert argocd_client.deployment_images(namespace="elsewhere") == {}

    # Someone edits a live Deployment: the images change, Argo CD reports the drift.
    before = argocd_client.status().reconciled_at
    argocd_double.set_live_image("coelho-realtime-fastapi", "127.0.0.1:5000/coelho/fastapi:hotfix")
    assert argocd_client.deployment_images(namespace=DEPLOY_NAMESPACE)["coelho-realtime-fastapi"] == (
        "127.0.0.1:5000/coelho/fastapi:hotfix",
    )
    st = argocd_client.refresh_and_read(timeout=5, poll_interval=POLL)
    assert st.reconciled_at is not None and before is not None and st.reconciled_at > before
    assert st.refresh_requested is None
    assert st.sync_status == "OutOfSync" and st.revision == sha
    assert st.out_of_sync_resources == (f"Deployment/{DEPLOY_NAMESPACE}/coelho-realtime-fastapi",)


def test_refresh_and_read_times_out_when_nobody_refreshes() -> None:
    client, api, clock = scripted_client([app_obj(annotations={REFRESH_ANNOTATION: "normal"})])
    with pytest.raises(SyncTimeout, match="did not complete the requested refresh within 3s") as exc:
        client.refresh_and_read(timeout=3, poll_interval=1)
    assert api.patches == [{"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}}]
    assert clock.now == 3 and exc.value.status is not None


def test_the_projects_application_and_values_layout(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    # k3d/argocd/application.yaml is multi-document; its Application is used as committed, with
    # repoURL pointed at the test repo. Values like k3d/helm/values.yaml: an empty tag means the
    # chart's appVersion; `enabled: false` renders no Deployment.
    root = Path(__file__).resolve().parents[1]
    app_yaml = root / "k3d" / "argocd" / "application.yaml"
    if not app_yaml.is_file():
        pytest.skip("k3d/argocd/application.yaml is not in this tree")
    manifest = application_from_yaml(app_yaml)
    manifest["spec"]["source"]["repoURL"] = deploy_repo.url
    chart = deploy_repo.work / "k3d" / "helm" / "Chart.yaml"
    chart.write_text("apiVersion: v2\nname: coelho-realtime\nversion: 0.1.0\nappVersion: \"0.1.0\"\n")
    values = deploy_repo.work / "k3d" / "helm" / "values.yaml"
    values.write_text(
        "fastapi:\n  enabled: true\n  image:\n    repository: r/fastapi\n    tag: \"\"\n"
        "kafkaProducers:\n  enabled: false\n  image:\n    repository: r/kafka-producers\n    tag: abc\n"
        "sveltekit:\n  image:\n    repository: r/sveltekit\n    tag: \"1111111\"\n"
    )
    git("add", "-A", cwd=deploy_repo.work)
    git("commit", "--quiet", "-m", "values in the project's layout", cwd=deploy_repo.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/master", cwd=deploy_repo.work)
    sha = git("rev-parse", "HEAD", cwd=deploy_repo.work).strip()

    double = make_argocd_double(manifest=manifest)
    client = make_argocd_client(double)
    client.sync(revision=sha, poll_interval=POLL)
    result = client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert result.status.images == ("r/fastapi:0.1.0", "r/sveltekit:1111111")
    assert client.deployment_images(namespace=DEPLOY_NAMESPACE) == {
        "coelho-realtime-fastapi": ("r/fastapi:0.1.0",),
        "coelho-realtime-sveltekit": ("r/sveltekit:1111111",),
    }
    op = double.application()["status"]["operationState"]["operation"]
    assert op["sync"]["syncOptions"] == manifest["spec"]["syncPolicy"]["syncOptions"]
    assert op["retry"] == manifest["spec"]["syncPolicy"]["retry"]


def test_a_foreign_running_operation_is_waited_for(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(sync_delay=0.8)
    client = make_argocd_client(double)
    theirs = deploy_repo.commit_tags("theirs")
    # Someone else (the UI, a colleague's kubectl) starts a sync through the same API.
    client._custom.patch_namespaced_custom_object(  # noqa: SLF001 - plain API access, as they would
        "argoproj.io", "v1alpha1", APP_NAMESPACE, "applications", APP_NAME,
        {"operation": {"initiatedBy": {"username": "alice"}, "sync": {"revision": theirs}}},
    )
    double.wait_for(lambda: client.status().operation_phase == "Running", timeout=5)

    ours = deploy_repo.commit_tags("ours")
    client.sync(revision=ours, poll_interval=POLL)
    sync_returned = time.monotonic()
    result = client.wait_synced(revision=ours, timeout=15, poll_interval=POLL)
    assert result.status.revision == ours

    started = double.events_of("operation-started")
    finished = double.events_of("operation-finished")
    assert [e.detail["initiated_by"] for e in started] == ["alice", "coelho-pipeline"]
    assert [e.detail["revision"] for e in finished] == [theirs, ours]
    assert finished[0].at <= sync_returned <= started[1].at + 0.5  # waited, then requested
    history = double.application()["status"]["history"]
    assert [h["initiatedBy"].get("username") for h in history] == ["alice", "coelho-pipeline"]


def test_automated_sync_runs_once_per_revision(
    make_argocd_double: Callable[..., ArgoCDControllerDouble],
    make_argocd_client: Callable[..., ArgoCDClient],
    deploy_repo: DeployRepo,
) -> None:
    double = make_argocd_double(auto_sync=True)
    client = make_argocd_client(double)
    double.wait_for(lambda: client.status().health_status == "Healthy", timeout=10)  # v0 auto-synced on creation

    sha = deploy_repo.commit_tags("v1")
    client.refresh()  # no explicit sync: the refresh finds the commit, automated sync applies it
    result = client.wait_synced(revision=sha, timeout=15, poll_interval=POLL)
    assert result.status.operation_initiated_by == "automated"

    # A failed automated sync is not retried for the same revision (A3); the waiter reports it.
    bad = deploy_repo.commit_tags("v2")
    double.fail_next_sync("ImagePullBackOff")
    client.refresh()
    with pytest.raises(SyncFailed, match="ImagePullBackOff"):
        client.wait_synced(revision=bad, timeout=15, poll_interval=POLL)
    client.refresh()
    double.wait_for(lambda: client.status().refresh_requested is None, timeout=5)
    assert [e.detail["revision"] for e in double.events_of("auto-sync")] == [deploy_repo.shas[0], sha, bad]


def test_resource_returns_none_without_a_cluster_and_a_client_with_one(
    monkeypatch: pytest.MonkeyPatch, argocd_double: ArgoCDControllerDouble, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert ArgoCDResource().client() is None
    assert ArgoCDResource(kubeconfig="", context="").client() is None

    kubeconfig = argocd_double.write_kubeconfig(tmp_path / "kc.yaml")
    resource = ArgoCDResource(kubeconfig=str(kubeconfig), context="kmock", sync_timeout_seconds=30)
    with resource.client() as client:  # type: ignore[union-attr]
        assert client.status().name == APP_NAME


def test_in_cluster_is_used_when_only_kubernetes_service_host_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    # Not in a pod: no ServiceAccount token file, so loading fails, and says which source it tried.
    with pytest.raises(ArgoCDError, match="in-cluster ServiceAccount"):
        ArgoCDResource().client()


def test_kubeconfig_problems_and_unreachable_api_hide_credentials(tmp_path: Path) -> None:
    secret = "s3cr3t-bearer-token-value"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        f"users: [{{name: u, user: {{token: {secret}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    client = ArgoCDClient.from_kubeconfig(kubeconfig=str(kubeconfig), context="c", app_name="a", namespace="argocd")
    client._custom.api_client.configuration.retries = 0  # noqa: SLF001 - fail fast
    with pytest.raises(ArgoCDError) as exc:
        client.status()
    assert "cannot reach the Kubernetes API" in str(exc.value) and "argocd/a" in str(exc.value)
    assert exc.value.transient
    assert secret not in str(exc.value) and secret not in repr(exc.value.__cause__ or "")

    with pytest.raises(ArgoCDError, match="context nope") as exc2:
        ArgoCDClient.from_kubeconfig(kubeconfig=str(kubeconfig), context="nope", app_name="a", namespace="argocd")
    assert secret not in str(exc2.value)


_SUBPROCESS_SCRIPT = """
import sys
from coelho_pipeline.resources.argocd import ArgoCDClient
kubeconfig, sha = sys.argv[1], sys.argv[2]
with ArgoCDClient.from_kubeconfig(kubeconfig=kubeconfig, context="kmock", app_name="coelho-realtime",
                                  namespace="argocd") as client:
    client.refresh()
    client.sync(revision=sha, poll_interval=0.05)
    print(client.wait_synced(revision=sha, timeout=30, poll_interval=0.05).status.describe())
"""


def test_double_serves_another_process(argocd_double: ArgoCDControllerDouble, deploy_repo: DeployRepo,
                                       tmp_path: Path) -> None:
    # Like a Dagster run worker launched by the daemon: a separate interpreter, URL via kubeconfig.
    kubeconfig = argocd_double.write_kubeconfig(tmp_path / "kubeconfig")
    sha = deploy_repo.commit_tags("from-a-subprocess")
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS_SCRIPT, str(kubeconfig), sha],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sync=Synced revision={sha} health=Healthy" in proc.stdout
    assert argocd_double.live_images() == deploy_repo.images("from-a-subprocess")


def test_double_over_git_daemon(deploy_repo: DeployRepo, make_argocd_double: Callable[..., ArgoCDControllerDouble],
                                make_argocd_client: Callable[..., ArgoCDClient]) -> None:
    # A service stopped by its PID, SIGKILL after the grace period: a git daemon that is slow to
    # exit on SIGTERM (a connection still being served) must not fail the test.
    port = services.free_port()
    daemon = services.start_git_daemon(deploy_repo.bare.parent, port)
    try:
        url = f"git://127.0.0.1:{port}/{deploy_repo.bare.name}"
        client = make_argocd_client(make_argocd_double(manifest=application_manifest(url)))
        sha = deploy_repo.commit_tags("over-git-daemon")
        client.refresh()
        client.sync(revision=sha, poll_interval=POLL)
        assert client.wait_synced(revision=sha, timeout=15, poll_interval=POLL).status.images == tuple(
            sorted(deploy_repo.images("over-git-daemon").values())
        )
    finally:
        daemon.stop(timeout=10)


# ---------------------------------------------------------------------------------------------
# Unit tests: scripted API, fake clock
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedCustomApi:
    """Returns the scripted Application objects in order (the last one repeats); records patches."""

    def __init__(self, objects: Sequence[Mapping[str, Any] | Exception]) -> None:
        self.objects = list(objects)
        self.patches: list[Mapping[str, Any]] = []
        self.gets = 0
        self.patch_error: Exception | None = None
        self.timeouts: list[Any] = []  # the _request_timeout of every call

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("_request_timeout"))
        item = self.objects[min(self.gets, len(self.objects) - 1)]
        self.gets += 1
        if isinstance(item, Exception):
            raise item
        return dict(item)

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: Mapping[str, Any], **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("_request_timeout"))
        if self.patch_error is not None:
            raise self.patch_error
        self.patches.append(body)
        return {}


def app_obj(*, sync: str = "Synced", revision: str = "a" * 40, health: str = "Healthy", phase: str | None = "Succeeded",
            op_revision: str | None = None, finished: str | None = "2025-01-01T12:00:00Z",
            reconciled: str | None = "2025-01-01T12:00:05Z", operation: Mapping[str, Any] | None = None,
            conditions: Sequence[Mapping[str, str]] = (), message: str | None = None,
            spec: Mapping[str, Any] | None = None, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    op_state: dict[str, Any] | None = None
    if phase is not None:
        op_state = {"phase": phase, "message": message, "startedAt": "2025-01-01T11:59:58Z", "finishedAt": finished,
                    "syncResult": {"revision": op_revision or revision},
                    "operation": {"initiatedBy": {"username": "someone"}}}
    obj: dict[str, Any] = {
        "metadata": {"name": "app", "namespace": "argocd", "annotations": dict(annotations or {})},
        "spec": dict(spec or {}),
        "status": {"sync": {"status": sync, "revision": revision}, "health": {"status": health},
                   "operationState": op_state, "reconciledAt": reconciled, "conditions": list(conditions)},
    }
    if operation is not None:
        obj["operation"] = dict(operation)
    return obj


def scripted_client(objects: Sequence[Mapping[str, Any] | Exception]) -> tuple[ArgoCDClient, ScriptedCustomApi, FakeClock]:
    api, clock = ScriptedCustomApi(objects), FakeClock()
    client = ArgoCDClient(custom_api=api, apps_api=AppsV1Api(), app_name="app",  # type: ignore[arg-type]
                          namespace="argocd", clock=clock, sleep=clock.sleep)
    return client, api, clock


def test_wait_timeout_is_deterministic_on_a_fake_clock() -> None:
    client, api, clock = scripted_client([app_obj(health="Progressing")])
    with pytest.raises(SyncTimeout) as exc:
        client.wait_synced(revision="a" * 40, timeout=10, poll_interval=2)
    # Every 0.1 s for 2 s, then doubling up to poll_interval; the last pause ends at the deadline.
    assert clock.sleeps == pytest.approx([0.1] * 20 + [0.2, 0.4, 0.8, 1.6, 2, 2, 1.0])
    assert api.gets == 28
    assert exc.value.status is not None and exc.value.status.health_status == "Progressing"
    assert "within 10s" in str(exc.value) and "health=Progressing" in str(exc.value)


def test_wait_walks_the_a5_sequence() -> None:
    rev = "b" * 40
    client, api, clock = scripted_client([
        app_obj(revision="a" * 40, phase=None, operation={"sync": {"revision": rev}}),       # requested
        app_obj(revision="a" * 40, phase="Running", finished=None, op_revision=rev,
                operation={"sync": {"revision": rev}}),                                      # running
        app_obj(revision=rev, health="Healthy", finished="2025-01-01T12:00:10Z",
                reconciled="2025-01-01T12:00:05Z"),                                          # stale
        app_obj(revision=rev, health="Progressing", finished="2025-01-01T12:00:10Z",
                reconciled="2025-01-01T12:00:11Z"),                                          # rollout
        app_obj(revision=rev, health="Healthy", finished="2025-01-01T12:00:10Z",
                reconciled="2025-01-01T12:00:12Z"),                                          # done
    ])
    result = client.wait_synced(revision=rev, timeout=60, poll_interval=1)
    assert api.gets == 5 and result.seconds == pytest.approx(0.4)
    assert api.patches == [{"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}}]  # the guard's refresh


def test_stale_guard_does_not_pile_up_refreshes_and_treats_equal_whole_seconds_as_stale() -> None:
    rev = "c" * 40
    stale_equal = app_obj(revision=rev, finished="2025-01-01T12:00:10Z", reconciled="2025-01-01T12:00:10Z")
    pending = app_obj(revision=rev, finished="2025-01-01T12:00:10Z", reconciled="2025-01-01T12:00:10Z",
                      annotations={REFRESH_ANNOTATION: "normal"})
    fresh_equal_fraction = app_obj(revision=rev, finished="2025-01-01T12:00:10.250Z",
                                   reconciled="2025-01-01T12:00:10.250Z")
    client, api, _ = scripted_client([stale_equal, pending, pending, fresh_equal_fraction])
    assert client.wait_synced(revision=rev, timeout=60, poll_interval=1).status.health_status == "Healthy"
    assert len(api.patches) == 1


def test_failed_operation_for_another_revision_is_not_ours() -> None:
    rev = "d" * 40
    client, _, _ = scripted_client([
        app_obj(revision="e" * 40, phase="Failed", op_revision="e" * 40, message="old failure"),
        app_obj(revision=rev, phase="Failed", op_revision=rev, message="hook failed: exit 1"),
    ])
    with pytest.raises(SyncFailed, match="hook failed: exit 1") as exc:
        client.wait_synced(revision=rev, timeout=60, poll_interval=1)
    assert exc.value.status.operation_revision == rev


def test_transient_api_errors_are_polled_through_and_permanent_ones_are_not() -> None:
    rev = "f" * 40
    client, api, _ = scripted_client([ApiException(status=503, reason="Service Unavailable"), app_obj(revision=rev)])
    assert client.wait_synced(revision=rev, timeout=60, poll_interval=1).status.revision == rev
    assert api.gets == 2

    client, _, _ = scripted_client([ApiException(status=503, reason="Service Unavailable")])
    with pytest.raises(SyncTimeout, match="HTTP 503") as exc:
        client.wait_synced(revision=rev, timeout=3, poll_interval=1)
    assert exc.value.status is None


def test_api_errors_are_typed_and_name_the_application() -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = ('{"kind":"Status","message":"applications.argoproj.io \\"app\\" is forbidden: User '
                      '\\"system:serviceaccount:coelho:pipeline\\" cannot patch resource \\"applications\\""}')
    client, api, _ = scripted_client([app_obj()])
    api.patch_error = forbidden
    with pytest.raises(ArgoCDPermissionError) as exc:
        client.refresh()
    msg = str(exc.value)
    assert "argocd/app" in msg and "ServiceAccount lacks permission to patch applications.argoproj.io" in msg
    assert "request a refresh" in msg and "HTTP 403" in msg and "cannot patch resource" in msg
    assert not exc.value.transient

    client, _, _ = scripted_client([ApiException(status=401, reason="Unauthorized")])
    with pytest.raises(ArgoCDPermissionError, match="lacks permission to get applications.argoproj.io"):
        client.status()

    client, _, _ = scripted_client([ApiException(status=422, reason="Unprocessable Entity")])
    with pytest.raises(ArgoCDError, match=r"argocd/app: get applications.argoproj.io .* HTTP 422 Unprocessable") as e3:
        client.status()
    assert type(e3.value) is ArgoCDError and e3.value.status_code == 422

    restored = pickle.loads(pickle.dumps(SyncTimeout("t", status=None, timeout=3.0)))
    assert isinstance(restored, SyncTimeout) and restored.timeout == 3.0 and str(restored) == "t"


def test_sync_patch_copies_policy_and_nulls_operation_state() -> None:
    spec = {"syncPolicy": {"syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
                           "retry": {"limit": 3}, "automated": {"prune": True}}}
    client, api, _ = scripted_client([app_obj(spec=spec)])
    client.sync(revision="1" * 40, initiated_by="ci", info={"run": "42", "commit": "1" * 40})
    assert api.patches == [{
        "operation": {
            "initiatedBy": {"username": "ci"},
            "info": [{"name": "run", "value": "42"}, {"name": "commit", "value": "1" * 40}],
            "sync": {"revision": "1" * 40, "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]},
            "retry": {"limit": 3},
        },
        "status": {"operationState": None},
    }]


def test_sync_gives_up_on_a_foreign_operation_that_never_ends() -> None:
    running = app_obj(phase="Running", finished=None, operation={"initiatedBy": {"username": "alice"}, "sync": {}})
    client, api, clock = scripted_client([running])
    with pytest.raises(SyncTimeout, match="initiated by alice") as exc:
        client.sync(revision="1" * 40, timeout=5, poll_interval=1)
    assert api.patches == [] and clock.now == 5
    assert exc.value.status is not None and exc.value.status.operation_phase == "Running"


def test_app_status_parsing() -> None:
    obj = {
        "metadata": {"name": "app", "namespace": "argocd"},
        "operation": {"sync": {}},
        "status": {
            "sync": {"status": "OutOfSync", "revisions": ["1" * 40, "2" * 40]},
            "health": {"status": "Degraded", "message": "crash loop"},
            "reconciledAt": "2025-01-01T12:00:00.123456789Z",
            "operationState": {"phase": "Running", "startedAt": "2025-01-01T11:59:00+01:00",
                               "operation": {"initiatedBy": {"automated": True}}},
            "conditions": [{"type": "SyncError", "message": "x"}],
            "resources": [
                {"kind": "Deployment", "namespace": "ns", "name": "d", "status": "OutOfSync"},
                {"kind": "ClusterRole", "name": "r", "status": "OutOfSync"},
                {"kind": "Service", "namespace": "ns", "name": "s", "status": "Synced"},
            ],
            "summary": {"images": ["a:1", "b:2"]},
        },
    }
    st = AppStatus.from_object(obj)
    assert st.revision == "1" * 40
    assert st.reconciled_at is not None and st.reconciled_at.microsecond == 123456
    assert st.operation_started_at is not None and st.operation_started_at.hour == 10
    assert st.operation_initiated_by == "automated" and st.operation_requested and st.operation_in_progress
    assert st.out_of_sync_resources == ("Deployment/ns/d", "ClusterRole//r")
    assert st.conditions == (("SyncError", "x"),) and st.error_conditions == ()
    assert st.images == ("a:1", "b:2")
    assert "\n" not in st.describe() and "health=Degraded (crash loop)" in st.describe()
    assert AppStatus.from_object({"metadata": {"name": "bare"}}).describe().startswith("/bare: sync=-")
    assert parse_timestamp("not a time") is None and parse_timestamp(None) is None
    assert assess(AppStatus.from_object(app_obj(revision="a" * 40)), "a" * 7).kind == "ok"  # short SHA
    assert assess(AppStatus.from_object(app_obj(health="Missing")), "a" * 40).kind == "unhealthy"
    assert assess(AppStatus.from_object(app_obj(health="Suspended")), "a" * 40).kind == "wait"


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b,c", {"a": "b"}, False),
        ("a!=b", {}, True),
        ("!a", {"a": "x"}, False),
        ("a in (x, y),b notin (z)", {"a": "y", "b": "q"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("app.kubernetes.io/component=fastapi", {"app.kubernetes.io/component": "fastapi"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is expected
