"""The real thing: `dagster dev` (webserver + daemon) on a sqlite instance, the sensor watching a
remote on the git daemon, runs launched by the daemon in subprocesses, and an Argo CD Application
served by kmock with the controller double (tests/argocd_double.py) moving its status.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from pipeline_harness import REPO_ROOT, make_source_repo

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

RUN_TIMEOUT = 240


def wait_for_run(instance: dg.DagsterInstance, sha: str, timeout: float = RUN_TIMEOUT) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": sha}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished run for {sha} after {timeout}s")


def sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    states = [s for s in instance.all_instigator_state() if s.name == "git_push_sensor"]
    return states[0].instigator_data.cursor if states and states[0].instigator_data else None


@pytest.fixture
def dagster_dev(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo):
    prefix = f"{registry_addr}/coelho"
    repo = make_source_repo(git_server, prefix)
    double, kubeconfig = argocd_for_repo(repo)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = services.free_port()
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "DOCKER_HOST": docker_host,
        "COELHO_GIT_URL": repo.url, "COELHO_REGISTRY": prefix, "COELHO_BUILD_NETWORK": "host",
        "COELHO_BUILD_ARGS": " ".join(f"{k}={v}" for k, v in base_images.items()),
        "COELHO_APPS": "fastapi,kafka_producers,sveltekit", "COELHO_WORKDIR": str(tmp_path / "work"),
        "KUBECONFIG": str(kubeconfig), "COELHO_SYNC_TIMEOUT": "60",
    }
    service = services.start_dagster_dev(project_dir=REPO_ROOT, env=env, port=port, log_path=tmp_path / "dagster.log")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield repo, instance, double
    finally:
        started = time.monotonic()
        service.stop(timeout=30)
    # Dagster shut itself down on SIGTERM (a SIGKILL after the timeout would show as -9).
    assert service.process.returncode == 0, f"dagster dev exited with {service.process.returncode}"
    assert time.monotonic() - started < 30


def test_push_is_picked_up_by_the_sensor_and_delivered_to_argocd(dagster_dev) -> None:
    repo, instance, double = dagster_dev
    seed = repo.head()
    # The first tick delivers the branch head as found: every app is built once.
    first = wait_for_run(instance, seed)
    assert first.status == dg.DagsterRunStatus.SUCCESS, first.run_id

    # Two commits in one push: only the newest is delivered, the other is recorded as superseded.
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    docs = repo.commit({"README.md": "# superseded docs change\n"}, "Docs")
    repo.commit({"apps/fastapi/main.py": "print('delivered by the daemon')\n"}, "FastAPI: daemon test")
    change = repo.publish()
    run = wait_for_run(instance, change)

    assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
    assert set(instance.get_dynamic_partitions("source_commits")) >= {seed, change}
    manifest_sha, author, subject = repo.log(1)[0]
    assert subject == f"Update image tags to {change} [skip ci]"
    # Every asset of the graph was materialized for this commit, Argo CD's sync state included.
    keys = {"source_commit", "image/fastapi", "image/kafka_producers", "image/sveltekit", "helm_values",
            "manifest_commit", "argocd_sync"}
    for key in keys:
        event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
        assert event is not None and event.run_id == run.run_id, key
    sync = instance.get_latest_materialization_event(dg.AssetKey("argocd_sync")).asset_materialization
    assert sync.metadata["revision"].value == manifest_sha
    assert (sync.metadata["sync"].value, sync.metadata["health"].value) == ("Synced", "Healthy")
    built = [k for k in ("fastapi", "kafka_producers", "sveltekit")
             if instance.get_latest_materialization_event(dg.AssetKey(["image", k]))
             .asset_materialization.metadata["rebuilt"].value]
    assert built == ["fastapi"]
    assert run.tags["coelho/superseded"] == "1"
    assert not instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": docs}))
    observation = instance.fetch_observations(dg.AssetKey("source_commit"), limit=1).records[0]
    recorded = observation.asset_observation.metadata
    assert recorded["superseded_by"].value == change and docs in recorded["superseded"].value
    # The sensor has seen the manifest commit and did not deliver it (the loop guard).
    deadline = time.monotonic() + 60
    while sensor_cursor(instance) != manifest_sha:
        assert time.monotonic() < deadline, f"sensor never ticked past {manifest_sha}"
        time.sleep(1)
    assert not instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": manifest_sha}))
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name="deliver_commit"))) == 2
