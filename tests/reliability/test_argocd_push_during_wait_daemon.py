"""Case 4 through the real daemon: a human pushes a docs commit while argocd_sync waits.

`dagster dev` (webserver + daemon) delivers the seeded head through the sensor; while its sync
operation is Running in the Argo CD controller double, a developer pushes a docs-only commit on
top of the pipeline's manifest commit. Argo CD (the double, re-comparing periodically) then shows
that commit; the run must succeed there and say so, and the docs commit's own run has nothing to do.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from daemon_harness import wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]


@pytest.fixture
def argocd_double_options() -> dict:
    # A sync long enough to push into; a rollout that outlasts the periodic re-compare.
    return {"sync_delay": 8, "health_delay": 3, "resync_interval": 0.5}


@pytest.fixture
def dagster_dev_env() -> dict[str, str]:
    return {"COELHO_SYNC_TIMEOUT": "45"}


def argocd_sync_metadata(instance: dg.DagsterInstance, run_id: str) -> dict:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    (sync,) = [e.asset_materialization for e in events if e.asset_materialization.asset_key == dg.AssetKey("argocd_sync")]
    return {k: v.value for k, v in sync.metadata.items()}


def test_a_docs_push_while_argocd_sync_waits_is_delivered_not_timed_out(dagster_dev) -> None:
    repo, instance, double, _ = dagster_dev
    seed = repo.head()

    # The sensor's run for the seed builds, commits and asks Argo CD to sync; wait for that.
    deadline = time.monotonic() + 300
    while not [e for e in double.events_of("operation-started") if e.detail.get("initiated_by") == "coelho-pipeline"]:
        assert time.monotonic() < deadline, "the delivery never asked Argo CD to sync"
        time.sleep(0.2)
    manifest = repo.head()
    docs = repo.push({"docs/while-syncing.md": "written while Argo CD syncs\n"}, "Docs: while syncing")

    run = wait_for_run(instance, seed)

    assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
    sync = argocd_sync_metadata(instance, run.run_id)
    assert sync["requested_revision"] == manifest
    assert sync["revision"] == docs
    assert sync["reached_via"] == f"descendant {docs} (pushed during the wait)"
    assert (sync["sync"], sync["health"]) == ("Synced", "Healthy")
    # The docs commit gets a run of its own that has nothing to deliver (Argo CD is at it already):
    # it stops after source_commit, and the other steps are skipped.
    follow_up = wait_for_run(instance, docs)
    assert follow_up.status == dg.DagsterRunStatus.SUCCESS, follow_up.run_id
    steps = {e.dagster_event.step_key for e in instance.all_logs(follow_up.run_id, of_type=dg.DagsterEventType.STEP_SKIPPED)}
    assert steps == {"images", "helm_values", "manifest_commit", "argocd_sync"}
    assert repo.head() == docs
