"""The real thing: `dagster dev` (webserver + daemon) on a sqlite instance, the sensor watching a
remote on the git daemon, runs launched by the daemon in subprocesses, and an Argo CD Application
served by kmock with the controller double (tests/argocd_double.py) moving its status.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from dagster_graphql import DagsterGraphQLClient

from coelho_pipeline.dev import services
from daemon_harness import sensor_cursor, wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]


def test_push_is_picked_up_by_the_sensor_and_delivered_to_argocd(dagster_dev) -> None:
    repo, instance, double, _ = dagster_dev
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


def test_two_deliveries_at_once_are_serialized_and_the_branch_ends_right(dagster_dev) -> None:
    """A manual run for an older commit and the sensor's run for a newer one, queued together: the
    run-tag limit in dagster.yaml lets one write at a time, and whichever order they run in, no tag
    goes back in time."""
    repo, instance, _, port = dagster_dev
    assert wait_for_run(instance, repo.head()).status == dg.DagsterRunStatus.SUCCESS
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    older = repo.commit({"apps/fastapi/main.py": "print('older')\n"}, "FastAPI: older")
    newer = repo.commit({"apps/sveltekit/main.py": "print('newer')\n"}, "SvelteKit: newer")
    repo.publish()
    instance.add_dynamic_partitions("source_commits", [older])
    DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
        "deliver_commit", repository_location_name="coelho",
        tags={"dagster/partition": older, "coelho/source-sha": older})

    runs = [wait_for_run(instance, older), wait_for_run(instance, newer)]

    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
    first, second = sorted((instance.get_run_record_by_id(r.run_id) for r in runs), key=lambda r: r.start_time)
    assert first.end_time <= second.start_time, "two delivery runs overlapped"
    values = repo.show("master", "k3d/helm/values.yaml")
    assert f'"{newer}"' in values  # sveltekit, and fastapi too if the newer run went first
    assert sum(s.startswith("Update image tags") for _, _, s in repo.log(3)) >= 1
