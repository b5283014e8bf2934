"""The commit being delivered, and what its delivery has to rebuild."""

import re
from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.delivery.coalesce import newer_queued_delivery, unchanged_delivery
from coelho_pipeline.delivery.plan import check_writable, plan_app
from coelho_pipeline.delivery.values_file import read_values
from coelho_pipeline.domain import AppPlan, SourceCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.hold import refuse_if_held
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import RegistryResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import read_scalar

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


# output_required=False: a delivery with nothing to do yields no value, and Dagster skips every
# step after this one (the run still succeeds) instead of building, rendering and syncing for nothing.
@dg.asset(partitions_def=source_commits, group_name="delivery", kinds={"git"}, retry_policy=RETRY_POLICY,
          output_required=False)
def source_commit(
    context: dg.AssetExecutionContext,
    git: GitResource,
    registry: RegistryResource,
    target: DeliveryTargetResource,
) -> Iterator[dg.Output[SourceCommit] | dg.AssetObservation]:
    """The pushed commit (author, message, time) and, per app, whether it must be rebuilt.

    The plan is the commit's own: an app is rebuilt when files under ``apps/<app>/`` differ between
    the commit its tag in this commit's values.yaml names (the delivery before it) and this commit,
    or when that image is not in the registry. Before anything is built, values.yaml at the branch
    tip must be writable: every app's repository and tag keys exist as plain, unaliased scalars.

    The rest of the delivery is skipped when it would change nothing (no image, no chart file
    changed: a docs-only commit), or when this is an automatic delivery and one of a newer commit
    is already queued (a burst of pushes): that one delivers this commit's changes too.
    """
    sha = _partition_sha(context)
    refuse_if_held(context.instance, sha)
    remote = git.remote()
    reg = registry.registry()
    try:
        tip = remote.fetch()
        remote.ensure_commit(sha)
        if not remote.is_ancestor(sha, tip):
            # E.g. a queued run for a commit that a force-push removed: its tags must not land on the new history.
            raise dg.Failure(f"commit {sha} is no longer on {remote.branch} (tip {tip[:12]}); not delivered",
                             allow_retries=False)
        info = remote.commit_info(sha)
        newer = newer_queued_delivery(context.instance, context.run, sha, remote)
        if newer is not None:
            yield _nothing_to_deliver(context, sha, f"superseded: run {newer} delivers a newer commit that "
                                                    "contains this one", superseded_by_run=newer)
            return
        tip_values = read_values(remote, tip, target.values_path)
        tip_source = f"{target.values_path} (at {tip[:12]})"
        check_writable(tip_values, target.catalog(), source=tip_source, registry=reg)
        own_values = read_values(remote, sha, target.values_path)
        plans = []
        for app in target.catalog():
            if not remote.path_exists(sha, f"{app.context}/Dockerfile"):
                raise dg.Failure(f"{app.context}/Dockerfile does not exist at commit {sha}", allow_retries=False)
            deployed = read_scalar(own_values, app.tag_path, source=target.values_path)
            plans.append(plan_app(app, sha=sha, deployed_tag=deployed, remote=remote, registry=reg))
        unchanged = unchanged_delivery(plans, target.catalog(), sha=sha, tip_values=tip_values,
                                       values_source=tip_source, chart_path=target.chart_path, remote=remote)
    except dg.Failure:
        raise
    except Exception as e:  # noqa: BLE001 - every error is classified once, in errors.failure
        raise failure(e) from e
    if unchanged is not None:
        yield _nothing_to_deliver(context, sha, unchanged, plan=_plan_table(plans))
        return
    result = SourceCommit(commit=info, branch_tip=tip, plans=tuple(plans))
    yield dg.Output(
        result,
        metadata={
            "sha": sha,
            "author": f"{info.author_name} <{info.author_email}>",
            "message": info.summary,
            "committed_at": info.committed_at.isoformat(),
            "apps_changed": ", ".join(result.changed_apps) or "none",
            "plan": dg.MetadataValue.md(_plan_table(plans)),
            "branch_head": tip,
        },
    )


def _nothing_to_deliver(context: dg.AssetExecutionContext, sha: str, reason: str,
                        **metadata: str) -> dg.AssetObservation:
    context.log.info(f"{sha[:12]}: nothing to deliver ({reason}); the remaining steps are skipped")
    return dg.AssetObservation(asset_key="source_commit", partition=sha, metadata={
        "nothing_to_deliver": reason,
        **{k: dg.MetadataValue.md(v) if k == "plan" else v for k, v in metadata.items()},
    })


def _partition_sha(context: dg.AssetExecutionContext) -> str:
    if not context.has_partition_key:
        raise dg.Failure("deliver_commit was launched without a partition: each run delivers one source commit. "
                         "Pick a commit in the launchpad's partition selector (or let git_push_sensor launch it).",
                         allow_retries=False)
    sha = context.partition_key
    if not _SHA_RE.match(sha):
        raise dg.Failure(
            f"partition {sha!r} of source_commits is not a full 40-hex commit SHA, so it names no commit to "
            "deliver. Remove it (UI: Assets › source_commit › Partitions, or "
            f"`DagsterInstance.get().delete_dynamic_partition('source_commits', {sha!r})`) and add the full SHA.",
            allow_retries=False)
    return sha


def _plan_table(plans: list[AppPlan]) -> str:
    rows = ["| app | deployed tag | rebuild | why |", "|---|---|---|---|"]
    rows += [f"| {p.app} | {(p.deployed_tag or '')[:12]} | {'yes' if p.rebuild else 'no'} | {p.reason} |"
             for p in plans]
    return "\n".join(rows)
