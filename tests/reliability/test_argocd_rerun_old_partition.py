"""Case 5 (sync side): re-running an old partition never syncs the cluster to a revision older than
the branch head, and a manifest commit forced off the branch syncs nothing.

Real in-process runs of deliver_commit on one persistent instance (so argocd_sync alone loads the
old partition's manifest_commit, as a re-execution from the UI does), the real git daemon, the
session registry and the Argo CD controller double over kmock.
"""

from __future__ import annotations

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from pipeline_harness import materializations

pytestmark = pytest.mark.docker

SYNC_ONLY = [dg.AssetKey("argocd_sync")]


def pipeline_revisions(double, since: int = 0) -> list[str]:
    """Revisions of the sync operations the pipeline requested, in order (from the ``since``-th on)."""
    return [e.detail["revision"] for e in double.events_of("operation-started")[since:]
            if e.detail.get("initiated_by") == "coelho-pipeline"]


@pytest.fixture
def delivered_twice(pipeline, argocd_for_repo):
    """Deliver A (the seed), then B (a FastAPI change): returns (pipeline, double, A, manifest A, B, manifest B)."""
    double, kubeconfig = argocd_for_repo(pipeline.repo)
    p = pipeline.with_settings(kubeconfig=str(kubeconfig), sync_timeout=30)
    a = p.repo.head()
    assert p.deliver(a).success
    manifest_a = p.repo.head()
    b = p.repo.push({"apps/fastapi/main.py": "print('B')\n"}, "FastAPI: B")
    assert p.deliver(b).success
    manifest_b = p.repo.head()
    assert manifest_b != manifest_a and p.repo.log(3)[2][0] == manifest_a
    return p, double, a, manifest_a, b, manifest_b


def test_rerunning_argocd_sync_alone_for_an_old_partition_syncs_the_head(delivered_twice) -> None:
    p, double, a, manifest_a, _, manifest_b = delivered_twice
    before = len(double.events_of("operation-started"))
    job = p.defs.resolve_job_def("deliver_commit")

    result = job.execute_in_process(partition_key=a, instance=p.instance, asset_selection=SYNC_ONLY)

    assert result.success
    assert pipeline_revisions(double, before) == [manifest_b]
    assert double.application()["status"]["operationState"]["operation"]["sync"]["revision"] == manifest_b
    sync = materializations(result)["argocd_sync"]
    assert sync["manifest_commit"] == manifest_a
    assert sync["requested_revision"] == manifest_b == sync["revision"]
    assert sync["synced"] == (f"the branch head {manifest_b} is newer than this delivery's commit {manifest_a}; "
                              f"synced the head, this delivery's tags were superseded by {manifest_b}")


def test_rerunning_the_whole_job_for_an_old_partition_syncs_the_head(delivered_twice) -> None:
    p, double, a, manifest_a, _, manifest_b = delivered_twice
    before = len(double.events_of("operation-started"))

    result = p.deliver(a)

    assert result.success
    assert pipeline_revisions(double, before) == [manifest_b]
    assert manifest_a not in pipeline_revisions(double, before)
    sync = materializations(result)["argocd_sync"]
    assert sync["requested_revision"] == manifest_b == sync["revision"]
    assert p.repo.head() == manifest_b  # and the rerun committed nothing


def test_a_head_that_still_carries_our_tags_says_so(pipeline, argocd_for_repo) -> None:
    double, kubeconfig = argocd_for_repo(pipeline.repo)
    p = pipeline.with_settings(kubeconfig=str(kubeconfig), sync_timeout=30)
    a = p.repo.head()
    assert p.deliver(a).success
    manifest_a = p.repo.head()
    docs = p.repo.push({"docs/later.md": "later docs\n"}, "Docs: later")
    before = len(double.events_of("operation-started"))

    result = p.defs.resolve_job_def("deliver_commit").execute_in_process(
        partition_key=a, instance=p.instance, asset_selection=SYNC_ONLY)

    assert result.success and pipeline_revisions(double, before) == [docs]
    assert materializations(result)["argocd_sync"]["synced"] == (
        f"the branch head {docs} is newer than this delivery's commit {manifest_a}; synced the head, which still "
        "carries this delivery's tags")


def test_a_manifest_commit_forced_off_the_branch_syncs_nothing(delivered_twice) -> None:
    p, double, a, manifest_a, _, _ = delivered_twice
    # Someone rewrites history: the branch restarts from A's source commit with a new commit on it.
    services.git("fetch", "-q", "origin", cwd=p.repo.clone)
    services.git("reset", "-q", "--hard", a, cwd=p.repo.clone)
    p.repo.commit({"docs/rewritten.md": "new history\n"}, "Docs: rewritten history")
    services.git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{p.repo.branch}", cwd=p.repo.clone)
    head = p.repo.head()
    before = len(double.events_of("operation-started"))

    result = p.defs.resolve_job_def("deliver_commit").execute_in_process(
        partition_key=a, instance=p.instance, asset_selection=SYNC_ONLY, raise_on_error=False)

    assert not result.success
    message = result.failure_data_for_node("argocd_sync").error.message
    assert manifest_a in message and head in message and "nothing was synced" in message
    assert pipeline_revisions(double, before) == []  # no operation was requested
    assert not [e for e in result.all_events if e.is_step_up_for_retry]  # terminal: not retried
