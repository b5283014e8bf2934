"""The Git push sensor: a new commit on the watched branch becomes a partition and a delivery run."""

import dagster as dg

from coelho_pipeline.domain import CommitInfo
from coelho_pipeline.jobs import deliver_commit
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.git import GitResource

SKIP_MARKERS = ("[skip ci]", "[ci skip]")


def is_pipeline_commit(commit: CommitInfo, pipeline_email: str) -> bool:
    """The pipeline's own manifest commits must never trigger another delivery (the loop guard)."""
    return commit.author_email == pipeline_email or any(m in commit.message for m in SKIP_MARKERS)


@dg.sensor(job=deliver_commit, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def git_push_sensor(context: dg.SensorEvaluationContext, git: GitResource) -> dg.SensorResult | dg.SkipReason:
    """Watches the branch with ls-remote; delivers the newest new commit, records the ones it supersedes."""
    remote = git.remote()
    head = remote.ls_remote_head()
    if head is None:
        return dg.SkipReason(f"branch {remote.branch} does not exist on {remote.display_url}")
    if head == context.cursor:
        return dg.SkipReason(f"no new commit on {remote.branch} (head {head[:12]})")
    remote.fetch()
    cursor = context.cursor
    rewritten = bool(cursor) and not (remote.has_commit(cursor) and remote.is_ancestor(cursor, head))
    if rewritten:
        # A force-push replaced the history the cursor was on: deliver the new head as found, even if
        # that commit was delivered before (its manifest commit may be gone with the old history).
        # Redelivering is safe: a manifest commit still on the branch is found by its trailer.
        context.log.warning(f"{remote.branch} was rewritten: {cursor[:12]} is not an ancestor of {head[:12]}")
        cursor = None
    new = remote.commits_between(cursor, head)
    candidates = [c for c in new if not is_pipeline_commit(c, git.author_email)]
    if not candidates:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"only pipeline commits since {str(context.cursor)[:12]}; head {head[:12]}"),
            cursor=head,
        )
    newest, superseded = candidates[0], candidates[1:]
    observations = []
    if superseded:
        context.log.info(f"delivering {newest.sha[:12]}; superseded without a build: "
                         + ", ".join(c.sha[:12] for c in superseded))
        observations.append(dg.AssetObservation(
            asset_key="source_commit",
            metadata={
                "superseded_by": newest.sha,
                "superseded": dg.MetadataValue.md("\n".join(f"- `{c.sha}` {c.summary}" for c in superseded)),
            },
        ))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            partition_key=newest.sha,
            run_key=f"{newest.sha}@rewrite-{context.cursor}" if rewritten else newest.sha,
            tags={"coelho/source-sha": newest.sha, "coelho/superseded": str(len(superseded))},
        )],
        dynamic_partitions_requests=[source_commits.build_add_request([newest.sha])],
        asset_events=observations,
        cursor=head,
    )
