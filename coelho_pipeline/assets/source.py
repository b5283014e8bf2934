"""The commit being delivered, and what its delivery has to rebuild."""

import re
from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.delivery.coalesce import newer_queued_delivery, unchanged_delivery
from coelho_pipeline.delivery.plan import check_writable, is_full_sha, plan_apps
from coelho_pipeline.delivery.promotion import upstream_verified
from coelho_pipeline.delivery.values_file import read_values
from coelho_pipeline.domain import AppPlan, CommitInfo, SourceCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.hold import refuse_if_held
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.git import GitRemote, GitResource
from coelho_pipeline.resources.images import RegistryResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.targets import Target
from coelho_pipeline.values import read_scalar

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def build_source_commit(target: Target) -> dg.AssetsDefinition:
    """The first asset of ``target``'s delivery graph, one partition per source commit."""

    # output_required=False: a delivery with nothing to do yields no value, and Dagster skips every
    # step after this one (the run still succeeds) instead of building, rendering and syncing for nothing.
    @dg.asset(key=target.key("source_commit"), partitions_def=source_commits(target),
              group_name=target.name("delivery"), kinds={"git"}, retry_policy=RETRY_POLICY, output_required=False,
              required_resource_keys=required_keys(target, "git", "registry", "target"))
    def source_commit(context: dg.AssetExecutionContext) -> Iterator[dg.Output[SourceCommit] | dg.AssetObservation]:
        """The pushed commit (author, message, time) and, per app, whether it must be rebuilt.

        The plan is the commit's own: an app is rebuilt when files under ``apps/<app>/`` differ between
        the commit its tag in this commit's values.yaml names (the delivery before it) and this commit,
        or when that image is not in the registry. Before anything is built, values.yaml at the branch
        tip must be writable: every app's repository and tag keys exist as plain, unaliased scalars.

        The rest of the delivery is skipped when it would change nothing (no image, no chart file
        changed: a docs-only commit), or when this is an automatic delivery and one of a newer commit
        is already queued (a burst of pushes): that one delivers this commit's changes too.
        """
        res = TargetResources(context.resources, target)
        yield from _source_commit(context, target, res.git, res.registry, res.target)

    return source_commit


def _source_commit(context: dg.AssetExecutionContext, where: Target, git: GitResource, registry: RegistryResource,
                   target: DeliveryTargetResource) -> Iterator[dg.Output[SourceCommit] | dg.AssetObservation]:
    sha = _partition_sha(context, where)
    refuse_if_held(context.instance, where, sha)
    remote = git.remote()
    reg = registry.registry()
    try:
        tip, info = _fetch_on_branch(remote, sha, "delivered")
        newer = newer_queued_delivery(context.instance, context.run, sha, remote)
        if newer is not None:
            yield _nothing_to_deliver(context, where, sha, f"superseded: run {newer} delivers a newer commit that "
                                                    "contains this one", superseded_by_run=newer)
            return
        tip_values = read_values(remote, tip, target.values_path)
        tip_source = f"{target.values_path} (at {tip[:12]})"
        check_writable(tip_values, target.catalog(), source=tip_source, registry=reg)
        own_values = read_values(remote, sha, target.values_path)
        missing = remote.missing_paths(sha, [f"{app.context}/Dockerfile" for app in target.catalog()])
        if missing:
            raise dg.Failure(f"{missing[0]} does not exist at commit {sha}", allow_retries=False)
        deployed = {app.name: read_scalar(own_values, app.tag_path, source=target.values_path)
                    for app in target.catalog()}
        plans = plan_apps(target.catalog(), sha=sha, deployed_tags=deployed, remote=remote, registry=reg)
        unchanged = unchanged_delivery(plans, target.catalog(), sha=sha, tip_values=tip_values,
                                       values_source=tip_source, chart_path=target.chart_path, remote=remote,
                                       other_values_files=target.other_values_paths)
    except dg.Failure:
        raise
    except Exception as e:  # noqa: BLE001 - every error is classified once, in errors.failure
        raise failure(e) from e
    if unchanged is not None:
        yield _nothing_to_deliver(context, where, sha, unchanged, plan=_plan_table(plans))
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


def _fetch_on_branch(remote: GitRemote, sha: str, what: str) -> tuple[str, CommitInfo]:
    """The branch tip and ``sha``'s commit, if ``sha`` is still on the branch."""
    tip = remote.fetch()
    remote.ensure_commit(sha)
    if not remote.is_ancestor(sha, tip):
        # E.g. a queued run for a commit that a force-push removed: its tags must not land on the new history.
        raise dg.Failure(f"commit {sha} is no longer on {remote.branch} (tip {tip[:12]}); not {what}",
                         allow_retries=False)
    return tip, remote.commit_info(sha)


def _nothing_to_deliver(context: dg.AssetExecutionContext, target: Target, sha: str, reason: str,
                        **metadata: str) -> dg.AssetObservation:
    context.log.info(f"{sha[:12]}: nothing to deliver ({reason}); the remaining steps are skipped")
    return dg.AssetObservation(asset_key=target.key("source_commit"), partition=sha, metadata={
        "nothing_to_deliver": reason,
        **{k: dg.MetadataValue.md(v) if k == "plan" else v for k, v in metadata.items()},
    })


def _partition_sha(context: dg.AssetExecutionContext, target: Target) -> str:
    if not context.has_partition_key:
        launcher = (f"{target.name('promotion_sensor')} (promotion: auto) launch it" if target.promote_from
                    else f"{target.name('git_push_sensor')} launch it")
        raise dg.Failure(f"{target.delivery_job} was launched without a partition: each run delivers one "
                         f"source commit. Pick a commit in the launchpad's partition selector (or let {launcher}).",
                         allow_retries=False)
    sha = context.partition_key
    if not _SHA_RE.match(sha):
        partitions = source_commits(target).name
        raise dg.Failure(
            f"partition {sha!r} of {partitions} is not a full 40-hex commit SHA, so it names no commit to "
            f"deliver. Remove it (UI: Assets › {target.key('source_commit').to_user_string()} › Partitions, or "
            f"`DagsterInstance.get().delete_dynamic_partition('{partitions}', {sha!r})`) and add the full SHA.",
            allow_retries=False)
    return sha


def _plan_table(plans: list[AppPlan]) -> str:
    rows = ["| app | deployed tag | rebuild | why |", "|---|---|---|---|"]
    rows += [f"| {p.app} | {(p.deployed_tag or '')[:12]} | {'yes' if p.rebuild else 'no'} | {p.reason} |"
             for p in plans]
    return "\n".join(rows)


def build_promoted_source_commit(target: Target, upstream: Target) -> dg.AssetsDefinition:
    """The first asset of a promoted environment's graph: the commit ``upstream`` delivered and
    verified, with a plan that builds nothing and takes over upstream's exact images."""

    @dg.asset(key=target.key("source_commit"), partitions_def=source_commits(target),
              group_name=target.name("delivery"), kinds={"git"}, retry_policy=RETRY_POLICY,
              deps=[upstream.key("argocd_sync")], output_required=False,
              required_resource_keys=required_keys(target, "git", "registry", "target"),
              description=f"The commit whose delivery to {upstream.environment.name} reached Synced+Healthy and "
                          f"passed verification, and the images {target.environment.name} takes over from it "
                          "(nothing is built).")
    def source_commit(context: dg.AssetExecutionContext) -> Iterator[dg.Output[SourceCommit] | dg.AssetObservation]:
        res = TargetResources(context.resources, target)
        sha = _partition_sha(context, target)
        refuse_if_held(context.instance, target, sha)
        verified = upstream_verified(context.instance, upstream, sha)
        remote = res.git.remote()
        files = res.target
        try:
            tip, info = _fetch_on_branch(remote, sha, "promoted")
            tip_values = read_values(remote, tip, files.values_path)
            check_writable(tip_values, files.catalog(), source=f"{files.values_path} (at {tip[:12]})",
                           registry=res.registry.registry())
            upstream_file = upstream.environment.values_path
            upstream_values = read_values(remote, verified.manifest_commit, upstream_file)
            plans = []
            for app in files.catalog():
                where = f"{upstream_file} at {verified.manifest_commit[:12]}"
                repository = read_scalar(upstream_values, app.repository_path, source=where)
                tag = read_scalar(upstream_values, app.tag_path, source=where)
                if not repository or not tag:
                    raise dg.Failure(f"{where} names no image for {app.name} ({app.repository_path}, {app.tag_path}); "
                                     "nothing to promote", allow_retries=False)
                plans.append(AppPlan(app.name, deployed_tag=tag, rebuild=False, repository=repository, promoted=True,
                                     reason=f"promoted from {upstream.environment.name}: {repository}:{tag}"))
            newer = _newer_everywhere(remote, sha, tip_values, files)
        except dg.Failure:
            raise
        except Exception as e:  # noqa: BLE001 - every error is classified once, in errors.failure
            raise failure(e) from e
        if newer:
            # Promoting it would only relabel newer images with an older commit (see _newer_everywhere).
            yield _nothing_to_deliver(context, target, sha, newer, plan=_plan_table(plans))
            return
        result = SourceCommit(commit=info, branch_tip=tip, plans=tuple(plans))
        context.log.info(f"promoting {sha[:12]} from {upstream.label} (manifest commit "
                         f"{verified.manifest_commit[:12]}, verification {verified.verification})")
        yield dg.Output(result, metadata={
            "sha": sha,
            "author": f"{info.author_name} <{info.author_email}>",
            "message": info.summary,
            "committed_at": info.committed_at.isoformat(),
            "promoted_from": upstream.label,
            "upstream_manifest_commit": verified.manifest_commit,
            "upstream_verification": verified.verification,
            "upstream_run": verified.run_id,
            "plan": dg.MetadataValue.md(_plan_table(plans)),
            "branch_head": tip,
        })

    return source_commit


def _newer_everywhere(remote: GitRemote, sha: str, tip_values: str, files: DeliveryTargetResource) -> str | None:
    """Why promoting ``sha`` would change nothing: every app here already runs a newer commit's image
    (an older delivery promoted after a newer one). None when any app could still change."""
    newer = []
    for app in files.catalog():
        current = read_scalar(tip_values, app.tag_path, source=files.values_path)
        if not (current and current != sha and is_full_sha(current) and remote.has_commit(current)
                and remote.is_ancestor(sha, current)):
            return None
        newer.append(current)
    return (f"superseded: {files.values_path} already names newer deliveries for every app "
            f"({', '.join(sorted({c[:12] for c in newer}))})")
