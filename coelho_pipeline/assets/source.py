"""The commit being delivered, and what its delivery has to rebuild."""

import re

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.domain import AppPlan, SourceCommit
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.git import GitError, GitRemote, GitResource
from coelho_pipeline.resources.images import ImageError, Registry, RegistryResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import ValuesError, read_scalar

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dg.asset(partitions_def=source_commits, group_name="delivery", kinds={"git"})
def source_commit(
    context: dg.AssetExecutionContext,
    git: GitResource,
    registry: RegistryResource,
    target: DeliveryTargetResource,
) -> dg.Output[SourceCommit]:
    """The pushed commit (author, message, time) and, per app, whether it must be rebuilt.

    An app is rebuilt when files under ``apps/<app>/`` differ between the commit its tag in
    values.yaml names (the one deployed) and this commit, or when that image is not in the registry.
    """
    sha = context.partition_key
    if not _SHA_RE.match(sha):
        raise dg.Failure(f"partition {sha!r} is not a full 40-hex commit SHA", allow_retries=False)
    remote = git.remote()
    try:
        tip = remote.fetch()
        remote.ensure_commit(sha)
        if not remote.is_ancestor(sha, tip):
            # E.g. a queued run for a commit that a force-push removed: its tags must not land on the new history.
            raise GitError(f"commit {sha} is no longer on {remote.branch} (tip {tip[:12]}); not delivered")
        info = remote.commit_info(sha)
        values_text = remote.read_file(tip, target.values_path)
    except GitError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    if values_text is None:
        raise dg.Failure(f"{target.values_path} does not exist on {remote.branch} at {tip}", allow_retries=False)
    plans = []
    for app in target.catalog():
        if not remote.path_exists(sha, f"{app.context}/Dockerfile"):
            raise dg.Failure(f"{app.context}/Dockerfile does not exist at commit {sha}", allow_retries=False)
        try:
            deployed = read_scalar(values_text, app.tag_path, source=target.values_path)
            plans.append(plan_app(app, sha=sha, deployed_tag=deployed, remote=remote, registry=registry.registry()))
        except (ValuesError, ImageError, GitError) as e:
            raise dg.Failure(str(e), allow_retries=False) from None
    result = SourceCommit(commit=info, branch_tip=tip, plans=tuple(plans))
    return dg.Output(
        result,
        metadata={
            "sha": sha,
            "author": f"{info.author_name} <{info.author_email}>",
            "message": info.summary,
            "committed_at": info.committed_at.isoformat(),
            "apps_changed": ", ".join(result.changed_apps) or "none",
            "plan": dg.MetadataValue.md(_plan_table(plans)),
        },
    )


def plan_app(app: App, *, sha: str, deployed_tag: str | None, remote: GitRemote, registry: Registry) -> AppPlan:
    """Decides whether ``app`` needs a new image for commit ``sha``."""
    repository = registry.repository(app.image)
    if not deployed_tag:
        return AppPlan(app.name, deployed_tag, True, "never delivered (empty tag in values)")
    if not remote.has_commit(deployed_tag):
        return AppPlan(app.name, deployed_tag, True, f"deployed tag {deployed_tag!r} is not a commit of the branch")
    if deployed_tag != sha and remote.is_ancestor(sha, deployed_tag):
        return AppPlan(app.name, deployed_tag, False, f"a newer commit, {deployed_tag[:12]}, is already delivered")
    changed = remote.changed_paths(deployed_tag, sha, app.context)
    if changed:
        return AppPlan(app.name, deployed_tag, True,
                       f"{len(changed)} file(s) changed under {app.context}/ since {deployed_tag[:12]}")
    if registry.digest(repository, deployed_tag) is None:
        return AppPlan(app.name, deployed_tag, True, f"{repository}:{deployed_tag} is missing from the registry")
    return AppPlan(app.name, deployed_tag, False, f"unchanged since {deployed_tag[:12]}")


def _plan_table(plans: list[AppPlan]) -> str:
    rows = ["| app | deployed tag | rebuild | why |", "|---|---|---|---|"]
    rows += [f"| {p.app} | {(p.deployed_tag or '')[:12]} | {'yes' if p.rebuild else 'no'} | {p.reason} |"
             for p in plans]
    return "\n".join(rows)
