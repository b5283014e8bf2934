"""The runbook (status, diff, sync [--force], metrics) as Dagster jobs and as the `coelho` console script.

In process: a real git daemon remote, kmock with the Argo CD controller double (tests/argocd_double.py,
a TEST DOUBLE, not Argo CD), the chart rendered with Helm's engine, the jobs merged into the
pipeline's Definitions. The CLI: the real `dagster dev` (webserver + daemon) through GraphQL.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline import cli
from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions
from coelho_pipeline.dev import services
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.runbook import (
    DIFFERS,
    EXTRA,
    IN_SYNC,
    MISSING_LIVE,
    NO_CLUSTER,
    TRACKING_LABEL,
    compare_object,
    desired_objects,
)
from daemon_harness import wait_for_run
from pipeline_harness import APPS, REPO_ROOT, make_source_repo, settings_for

APP = "coelho-realtime"
NS = "coelho-realtime"
DEPLOYMENTS = ("coelho-realtime-fastapi", "coelho-realtime-kafka-producers", "coelho-realtime-sveltekit")
# Kinds the chart renders, by kmock resource; ServiceMonitor is left unserved (a CRD not installed).
SERVED = {"ConfigMap": "v1/configmaps", "Service": "v1/services", "ServiceAccount": "v1/serviceaccounts",
          "Deployment": "apps/v1/deployments"}


def with_runbook(settings: Settings) -> dg.Definitions:
    """The pipeline's Definitions, runbook jobs included."""
    return build_definitions(settings)


def output_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def step_error(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.error.message


@pytest.fixture
def runbook(tmp_path: Path, git_server, argocd_for_repo):
    """(repo, double, defs, instance): a fresh source repo, the Application on the double, the jobs."""
    repo = make_source_repo(git_server)
    double, kubeconfig = argocd_for_repo(repo)
    settings = settings_for(repo, "127.0.0.1:5000/coelho", tmp_path / "work", {}, kubeconfig=str(kubeconfig))
    with dg.instance_for_test() as instance:
        yield repo, double, with_runbook(settings), instance


def run(defs: dg.Definitions, instance, job: str, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=config or {},
                                                        raise_on_error=False)


def sync_config(force: bool) -> dict:
    return {"ops": {"application_sync": {"config": {"force": force}}}}


# -- status and sync ----------------------------------------------------------------------------


def test_sync_reaches_synced_healthy_at_the_head_and_status_shows_history_and_resources(runbook) -> None:
    repo, double, defs, instance = runbook
    head = repo.head()

    synced = run(defs, instance, "runbook_sync", sync_config(False))

    assert synced.success, step_error(synced)
    meta = output_metadata(synced)
    assert (meta["revision"], meta["sync"], meta["health"], meta["force"]) == (head, "Synced", "Healthy", False)
    assert f"to the branch head {head} (refresh + sync)" in meta["report"]
    operation = double.application()["status"]["operationState"]["operation"]
    assert operation["sync"]["revision"] == head
    assert "Replace=true" not in operation["sync"].get("syncOptions", [])
    assert "syncStrategy" not in operation["sync"]
    assert set(double.live_images()) == set(DEPLOYMENTS)

    status = run(defs, instance, "runbook_status")

    assert status.success, step_error(status)
    meta = output_metadata(status)
    report = meta["report"]
    assert (meta["sync"], meta["health"], meta["revision"], meta["operation"]) == (
        "Synced", "Healthy", head, "Succeeded")
    assert "| sync | Synced |" in report and "| health | Healthy |" in report
    assert f"| revision | {head} |" in report
    assert "| last operation | Succeeded: successfully synced (all tasks run) |" in report
    assert "### History (1)" in report and f"| 1 | {head} |" in report
    assert "### Resources (3)" in report
    for name in DEPLOYMENTS:
        assert f"| apps/Deployment | {NS} | {name} | Synced |" in report


def test_sync_force_hard_refreshes_and_replaces_with_force_apply(runbook) -> None:
    repo, double, defs, instance = runbook
    assert run(defs, instance, "runbook_sync", sync_config(False)).success
    # Someone edits a Deployment live; a forced sync recreates it from Git (Replace=true).
    double.set_live_image("coelho-realtime-fastapi", "127.0.0.1:5000/someone/hotfix:1")
    refreshes_before = len(double.events_of("refresh"))

    forced = run(defs, instance, "runbook_sync", sync_config(True))

    assert forced.success, step_error(forced)
    meta = output_metadata(forced)
    assert meta["force"] is True and (meta["sync"], meta["health"]) == ("Synced", "Healthy")
    assert "(forced (hard refresh, Replace=true, apply --force))" in meta["report"]
    assert "| coelho-realtime-fastapi | Synced | deployment.apps/coelho-realtime-fastapi replaced |" in meta["report"]
    assert any(e.detail.get("reason") == "refresh=hard" for e in double.events_of("refresh")[refreshes_before:])
    app = double.application()
    sync = app["status"]["operationState"]["operation"]["sync"]
    assert sync["revision"] == repo.head()
    # The Application's own options are kept; Replace=true is added once; apply is forced.
    assert sync["syncOptions"] == ["CreateNamespace=true", "ServerSideApply=true", "Replace=true"]
    assert sync["syncStrategy"] == {"apply": {"force": True}}
    assert "someone/hotfix" not in double.live_images()["coelho-realtime-fastapi"]
    assert [h["id"] for h in app["status"]["history"]] == [1, 2]


def test_a_failed_sync_fails_the_job_with_argocds_message(runbook) -> None:
    _, double, defs, instance = runbook
    double.fail_next_sync("one or more objects failed to apply: quota exceeded")

    result = run(defs, instance, "runbook_sync", sync_config(False))

    assert not result.success
    assert "quota exceeded" in step_error(result)


def test_without_a_cluster_every_command_says_so(runbook, tmp_path: Path) -> None:
    repo, _, _, instance = runbook
    defs = with_runbook(settings_for(repo, "127.0.0.1:5000/coelho", tmp_path / "w2", {}))
    for job, config in (("runbook_status", {}), ("runbook_diff", {}), ("runbook_sync", sync_config(True))):
        result = run(defs, instance, job, config)
        assert not result.success
        assert NO_CLUSTER in step_error(result)


# -- diff ---------------------------------------------------------------------------------------


def server_side(obj: dict, namespace: str) -> dict:
    """``obj`` as an API server stores it: bookkeeping, status, defaults and a controller's label added."""
    live = copy.deepcopy(obj)
    meta = live.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    meta.update(uid="0b1c", resourceVersion="4711", generation=3, creationTimestamp="2024-05-01T12:00:00Z",
                managedFields=[{"manager": "argocd-controller", "operation": "Apply"}])
    meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    meta.setdefault("labels", {})[TRACKING_LABEL] = APP
    live["status"] = {"observedGeneration": 3}
    if live["kind"] == "Service":
        live["spec"].update(clusterIP="10.43.0.17", sessionAffinity="None", internalTrafficPolicy="Cluster")
    if live["kind"] == "Deployment":
        live["spec"].setdefault("progressDeadlineSeconds", 600)
        live["spec"].setdefault("revisionHistoryLimit", 10)
        for c in live["spec"]["template"]["spec"]["containers"]:
            c.update(terminationMessagePath="/dev/termination-log", imagePullPolicy=c.get("imagePullPolicy", "Always"))
    return live


def test_diff_reports_each_resource_in_sync_differs_missing_or_extra(runbook, tmp_path: Path) -> None:
    repo, double, defs, instance = runbook
    assert run(defs, instance, "runbook_sync", sync_config(False)).success
    head = repo.head()
    target = DeliveryTargetResource(apps=list(APPS))
    git = GitResource(url=repo.url, branch=repo.branch, cache_dir=str(tmp_path / "git"))
    remote = git.remote()
    assert remote.fetch() == head
    desired = desired_objects(remote, head, target)
    for kind, resource in SERVED.items():
        double.serve_resource(resource, kind)
    for obj in desired:
        if obj["kind"] in SERVED and (obj["kind"], obj["metadata"]["name"]) not in {
                ("Service", "coelho-realtime-sveltekit"), ("Deployment", "coelho-realtime-sveltekit")}:
            double.put_object(SERVED[obj["kind"]], server_side(obj, NS))
    # The sveltekit Deployment runs another image (drift), its Service was deleted, and one
    # ConfigMap carrying the Application's tracking label is not in Git.
    (svelte,) = [o for o in desired if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("sveltekit")]
    drifted = server_side(svelte, NS)
    wanted_image = drifted["spec"]["template"]["spec"]["containers"][0]["image"]
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "127.0.0.1:5000/someone/hotfix:1"
    double.put_object("apps/v1/deployments", drifted)
    double.put_object("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"},
                                        "metadata": {"name": "leftover", "labels": {TRACKING_LABEL: APP}}})
    double.put_object("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "not-ours", "labels": {TRACKING_LABEL: "other"}}})

    result = run(defs, instance, "runbook_diff")

    assert result.success, step_error(result)
    meta = output_metadata(result)
    report = meta["report"]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1].rstrip(" |")
            for line in report.splitlines() if line.startswith("| ") and not line.startswith("| resource")}
    assert rows["apps/Deployment coelho-realtime/coelho-realtime-fastapi"] == IN_SYNC
    assert rows["apps/Deployment coelho-realtime/coelho-realtime-kafka-producers"] == IN_SYNC
    assert rows["apps/Deployment coelho-realtime/coelho-realtime-spark-streaming"] == IN_SYNC
    assert rows["apps/Deployment coelho-realtime/coelho-realtime-sveltekit"] == DIFFERS
    assert rows["Service coelho-realtime/coelho-realtime-fastapi"] == IN_SYNC
    assert rows["Service coelho-realtime/coelho-realtime-sveltekit"] == MISSING_LIVE
    assert rows["ConfigMap coelho-realtime/coelho-realtime-shared"] == IN_SYNC
    assert rows["ConfigMap coelho-realtime/coelho-realtime-sveltekit"] == IN_SYNC
    assert rows["ServiceAccount coelho-realtime/coelho-realtime"] == IN_SYNC
    assert rows["ConfigMap coelho-realtime/leftover"].startswith(EXTRA)
    assert "ConfigMap coelho-realtime/not-ours" not in rows
    assert rows["monitoring.coreos.com/ServiceMonitor coelho-realtime/coelho-realtime-fastapi"].startswith(
        f"{MISSING_LIVE} (the API serves no ServiceMonitor")
    # The unified diff of the one that differs: only the image, nothing the server set.
    assert f"-        image: 127.0.0.1:5000/someone/hotfix:1\n+        image: {wanted_image}" in report
    section = report.split("### apps/Deployment coelho-realtime/coelho-realtime-sveltekit")[1]
    for server_field in ("resourceVersion", "managedFields", "last-applied", "observedGeneration",
                         "progressDeadlineSeconds", "terminationMessagePath", TRACKING_LABEL):
        assert server_field not in section
    assert meta["differences"] == meta["differs"] + meta["missing_live"] + meta["extra"]
    assert (meta["in_sync"], meta["differs"], meta["missing_live"], meta["extra"]) == (9, 1, 3, 1)
    assert meta["revision"] == head


def test_compare_ignores_server_fields_and_defaults_and_compares_quantities_by_value() -> None:
    desired = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": None, "labels": {}},
               "spec": {"containers": [{"name": "c", "image": "i:1",
                                        "resources": {"limits": {"cpu": 0.5, "memory": "1Gi"}}}]}}
    live = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "9", "generation": 2,
                         "creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [{}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"containers": [{"name": "c", "image": "i:1", "imagePullPolicy": "IfNotPresent",
                                     "resources": {"limits": {"cpu": "500m", "memory": "1073741824"}}}],
                     "dnsPolicy": "ClusterFirst"},
            "status": {"phase": "Running"}}
    assert compare_object(desired, live) == ""
    live["spec"]["containers"][0]["image"] = "i:2"
    live["spec"]["containers"].append({"name": "sidecar", "image": "s:1"})
    diff = compare_object(desired, live, fromfile="live", tofile="git")
    assert diff.startswith("--- live\n+++ git\n")
    assert "-  - image: i:2\n+  - image: i:1\n" in diff
    assert "-  - image: s:1\n-    name: sidecar\n" in diff  # an extra list element shows
    assert "uid" not in diff and "dnsPolicy" not in diff and "imagePullPolicy" not in diff


# -- the console script -------------------------------------------------------------------------


def test_cli_says_when_the_webserver_is_unreachable(capsys) -> None:
    port = services.free_port()
    code = cli.main(["--url", f"http://user:s3cret@127.0.0.1:{port}", "--timeout", "5", "status"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert f"cannot reach the Dagster webserver at http://127.0.0.1:{port}" in err
    assert "COELHO_DAGSTER_URL" in err and "s3cret" not in err


def coelho(port: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it (``python -m`` until pyproject.toml installs ``coelho``)."""
    return subprocess.run([sys.executable, "-m", "coelho_pipeline.cli", "--timeout", "180", *args],
                          env={**os.environ, cli.URL_ENV: f"http://127.0.0.1:{port}"},
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)


@pytest.mark.docker
@pytest.mark.daemon
def test_cli_status_sync_force_diff_rollback_and_release_through_dagster_dev(dagster_dev) -> None:
    repo, instance, double, port = dagster_dev
    assert wait_for_run(instance, repo.head()).status == dg.DagsterRunStatus.SUCCESS  # the sensor's delivery
    head = repo.head()  # the manifest commit that delivery pushed

    status = coelho(port, "status")
    assert status.returncode == 0, status.stderr
    assert "| sync | Synced |" in status.stdout and f"| revision | {head} |" in status.stdout
    assert "### History (1)" in status.stdout
    seed_sha = repo.log(2)[1][0]
    assert "| deliveries | not held |" in status.stdout
    assert f"| last delivery | `{seed_sha}`, rollout verification passed |" in status.stdout

    forced = coelho(port, "sync", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"to the branch head {head} (forced" in forced.stdout
    assert double.application()["status"]["operationState"]["operation"]["sync"]["syncStrategy"] == {
        "apply": {"force": True}}

    diff = coelho(port, "diff")
    # kmock serves only Deployments: the rest is missing live, and the double's Deployments are minimal.
    assert diff.returncode == cli.EXIT_DIFFERENCES, diff.stderr
    assert f"branch head {head} against live" in diff.stdout and "| missing live" in diff.stdout

    double.fail_next_sync("one or more objects failed to apply: quota exceeded")
    failed = coelho(port, "sync")
    assert failed.returncode == cli.EXIT_ERROR
    assert "step application_sync failed" in failed.stderr and "quota exceeded" in failed.stderr
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/launched-by": "coelho-cli"}))
    assert len(runs) == 4

    seed = repo.log(2)[1][0]  # the seeded commit under the sensor's manifest commit
    newer = repo.push({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")
    assert wait_for_run(instance, newer).status == dg.DagsterRunStatus.SUCCESS
    rolled = coelho(port, "rollback", seed, "--reason", "newer FastAPI misbehaves")
    assert rolled.returncode == 0, rolled.stderr
    assert f"Rolled back to `{seed}` (from `{newer}`)" in rolled.stdout and "Deliveries are held" in rolled.stdout
    assert repo.log(1)[0][2] == f"Roll back to {seed} [skip ci]"
    held = coelho(port, "status")
    assert "| deliveries | held since " in held.stdout and f"by rollback to {seed[:12]}: newer FastAPI misbehaves |" \
        in held.stdout
    released = coelho(port, "release", "--reason", "fixed")
    assert released.returncode == 0, released.stderr
    assert "Released the hold (held since" in released.stdout

    # The seed's delivery and newer's, rolled back: 2 deliveries, 3 deployments (with the rollback's).
    metrics = coelho(port, "metrics")
    assert metrics.returncode == 0, metrics.stderr
    assert "2 deliveries, 3 deployments." in metrics.stdout
    assert "| change failure rate | 50.0% | low | 1 of 2 deliveries failed (rolled back 1) |" in metrics.stdout
    assert "| rework rate | 33.3% | - | 1 of 3 deployments: 1 rollback(s), 0 fix(es) after a failure |" in metrics.stdout
    future = coelho(port, "metrics", "--since", "2099-01-01")
    assert future.returncode == 0, future.stderr
    assert "0 deliveries, 0 deployments." in future.stdout and "| change failure rate | no data |" in future.stdout
