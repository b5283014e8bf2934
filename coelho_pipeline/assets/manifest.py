"""The rendered values.yaml for a commit, and the one Git commit that publishes it."""

import io
import random
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.chart import ChartRenderError, argocd_helm_overrides, render_chart, verify_images
from coelho_pipeline.domain import ManifestCommit, SourceCommit, ValuesEdit
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.git import GitError, GitRemote, GitResource, PushRejected
from coelho_pipeline.resources.images import ImageError, RegistryResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import TagWrite, ValuesError, read_scalar, set_tags

PUSH_ATTEMPTS = 6
PUSH_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)

TAGS_EXIST = "tags_exist_in_registry"
CHART_RENDERS = "chart_renders_with_built_images"


def build_helm_values(apps: Sequence[App]) -> dg.AssetsDefinition:
    from coelho_pipeline.assets.images import image_key

    @dg.asset(
        name="helm_values",
        partitions_def=source_commits,
        group_name="delivery",
        kinds={"yaml", "helm"},
        deps=[image_key(app) for app in apps],
        check_specs=[
            dg.AssetCheckSpec(TAGS_EXIST, asset="helm_values", blocking=True,
                              description="Every app tag in the file names an image that exists in the registry."),
            dg.AssetCheckSpec(CHART_RENDERS, asset="helm_values", blocking=True,
                              description="The chart renders with these values and every app Deployment "
                                          "runs exactly the image delivered for this commit."),
        ],
    )
    def helm_values(
        context: dg.AssetExecutionContext,
        source_commit: SourceCommit,
        git: GitResource,
        registry: RegistryResource,
        target: DeliveryTargetResource,
    ):
        """values.yaml at the branch tip with each app's tag set; only the changed tag scalars differ."""
        remote = git.remote()
        try:
            tip = remote.fetch()
            text = _read_values(remote, tip, target)
            writes, kept = tag_writes(remote, text, source_commit, target)
            new_text, changes = set_tags(text, writes, source=target.values_path)
        except GitError as e:
            raise dg.Failure(str(e)) from None
        except ValuesError as e:
            raise dg.Failure(str(e), allow_retries=False) from None
        for note in kept:
            context.log.warning(note)
        edit = ValuesEdit(
            path=target.values_path, base_sha=tip, tags=tuple((w.path, w.tag) for w in writes),
            changes=tuple((c.path, c.old, c.new) for c in changes), text=new_text,
        )
        yield dg.Output(edit, metadata={
            "path": target.values_path,
            "base_commit": tip,
            "tags_changed": len(changes),
            "changes": dg.MetadataValue.md("\n".join(f"- `{c.path}`: `{c.old}` → `{c.new}` (line {c.line})"
                                                      for c in changes) or "no change"),
        })

        missing = _missing_images(new_text, target, registry)
        yield dg.AssetCheckResult(
            check_name=TAGS_EXIST, passed=not missing,
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {m}" for m in missing) or "none")},
        )
        problems = render_problems(remote, tip, new_text, target, registry)
        yield dg.AssetCheckResult(
            check_name=CHART_RENDERS, passed=not problems,
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
        )
        for p in missing + problems:
            context.log.error(p)

    return helm_values


@dg.asset(partitions_def=source_commits, group_name="delivery", kinds={"git"}, pool="git_manifest")
def manifest_commit(
    context: dg.AssetExecutionContext,
    source_commit: SourceCommit,
    helm_values: ValuesEdit,
    git: GitResource,
    registry: RegistryResource,
    target: DeliveryTargetResource,
) -> dg.Output[ManifestCommit]:
    """Commits the new tags to the watched branch as ``Update image tags to <sha> [skip ci]`` and pushes.

    One writer at a time (the ``git_manifest`` pool and the run-tag limit in dagster.yaml). Only the
    tags of the apps this commit rebuilt are written, and never over a tag a newer delivery already
    wrote. If the branch moved meanwhile, those writes (not a text diff) are re-applied to the new
    tip, re-checked and pushed again with backoff. A rerun for the same source SHA finds its earlier
    commit by the ``Source-Commit`` trailer and makes no second one; nothing to change means no
    commit. Without a new commit, the branch tip is what Argo CD must reach: Git stays the truth.
    """
    remote = git.remote()
    sha = source_commit.sha
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            tip = remote.fetch()
            earlier = remote.find_manifest_commit(sha)
            if earlier:
                moved_on = "" if earlier == tip else f"; the branch has moved on to {tip[:12]}"
                return _result(ManifestCommit(tip, False, sha, attempt,
                                              f"committed by an earlier run as {earlier[:12]}{moved_on}"))
            text = _read_values(remote, tip, target)
            writes, kept = tag_writes(remote, text, source_commit, target)
            new_text, changes = set_tags(text, writes, source=target.values_path)
        except (GitError, ValuesError) as e:
            raise dg.Failure(str(e), allow_retries=False) from None
        for note in kept:
            context.log.warning(note)
        if not changes:
            reason = "; ".join(kept) or "values already hold these tags"
            return _result(ManifestCommit(tip, False, sha, attempt, reason))
        if tip != helm_values.base_sha:
            # The branch moved since helm_values was checked: the render check guards this commit too.
            problems = render_problems(remote, tip, new_text, target, registry)
            if problems:
                raise dg.Failure("render check failed on the new branch tip; nothing committed:\n" +
                                 "\n".join(problems), allow_retries=False)
        message = commit_message(sha, [(c.path, c.old, c.new) for c in changes])
        try:
            new_sha = remote.commit_file(base_sha=tip, path=target.values_path, text=new_text, message=message)
            remote.push(new_sha)
        except PushRejected as e:
            if attempt == PUSH_ATTEMPTS:
                raise dg.Failure(f"{e}; gave up after {attempt} attempts, nothing pushed") from None
            delay = PUSH_BACKOFF_SECONDS[min(attempt - 1, len(PUSH_BACKOFF_SECONDS) - 1)]
            delay *= 1 + random.random() / 2  # jitter keeps competing writers from retrying in step
            context.log.warning(f"attempt {attempt}: {e}; refetching and retrying in {delay:.1f}s")
            time.sleep(delay)
            continue
        except GitError as e:
            raise dg.Failure(str(e)) from None
        context.log.info(f"pushed {new_sha} to {remote.branch}: {len(changes)} tag(s) changed")
        return _result(ManifestCommit(new_sha, True, sha, attempt, f"{len(changes)} tag(s) changed"))
    raise AssertionError("unreachable: the loop returns or raises")


def commit_message(source_sha: str, changes: Sequence[tuple[str, str | None, str]]) -> str:
    body = "\n".join(f"{path}: {old or '(empty)'} -> {new}" for path, old, new in changes)
    return f"Update image tags to {source_sha} [skip ci]\n\n{body}\n\nSource-Commit: {source_sha}\n"


def tag_writes(remote: GitRemote, values_text: str, source_commit: SourceCommit,
               target: DeliveryTargetResource) -> tuple[list[TagWrite], list[str]]:
    """The tag writes for the apps ``source_commit`` rebuilt, and notes on the ones left alone.

    A tag that already names a descendant of this commit was written by a newer delivery: writing
    ours over it would roll that app back, so it is kept. Apps this commit did not rebuild are not
    written at all, so a concurrent change to their tags survives a retry.
    """
    sha = source_commit.sha
    writes, kept = [], []
    for app in target.catalog():
        if not source_commit.plan(app.name).rebuild:
            continue
        current = read_scalar(values_text, app.tag_path, source=target.values_path)
        if current and current != sha and remote.has_commit(current) and remote.is_ancestor(sha, current):
            kept.append(f"{app.tag_path} keeps {current[:12]}: a newer commit than {sha[:12]} is already delivered")
            continue
        writes.append(TagWrite(app.tag_path, sha))
    return writes, kept


def render_problems(remote: GitRemote, tip: str, values_text: str, target: DeliveryTargetResource,
                    registry: RegistryResource) -> list[str]:
    """Renders the chart at ``tip`` with ``values_text`` the way the Argo CD Application will, and
    checks that each app Deployment runs ``<registry>/<image>:<its tag in values_text>``."""
    reg = registry.registry()
    try:
        expected = {app.component: f"{reg.repository(app.image)}:"
                                   f"{read_scalar(values_text, app.tag_path, source=target.values_path)}"
                    for app in target.catalog()}
    except ValuesError as e:
        return [str(e)]
    try:
        application = remote.read_file(tip, target.application_path)
        overrides = argocd_helm_overrides(application) if application else {}
    except GitError as e:
        return [str(e)]
    except ValueError as e:  # the Application manifest does not parse
        return [f"{target.application_path}: {e}"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            chart_dir = Path(tmp) / "chart"
            with tarfile.open(fileobj=io.BytesIO(remote.archive(tip, target.chart_path))) as tar:
                _extract(tar, chart_dir)
            objects = render_chart(chart_dir, values_text, release=target.release_name,
                                   namespace=target.deploy_namespace, overrides=overrides)
    except ChartRenderError as e:
        return [f"the chart at {target.chart_path} does not render: {e}"]
    except GitError as e:
        return [str(e)]
    return verify_images(objects, expected)


def _missing_images(values_text: str, target: DeliveryTargetResource, registry: RegistryResource) -> list[str]:
    reg = registry.registry()
    missing = []
    for app in target.catalog():
        try:
            repository = read_scalar(values_text, app.repository_path, source=target.values_path)
            tag = read_scalar(values_text, app.tag_path, source=target.values_path)
        except ValuesError as e:
            missing.append(str(e))
            continue
        ref = f"{repository}:{tag}"
        try:
            if not repository or not tag or reg.digest(repository, tag) is None:
                missing.append(f"{app.tag_path}: {ref} does not exist in the registry")
        except ImageError as e:
            missing.append(f"{app.tag_path}: {e}")
    return missing


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extracts a git archive; the "data" filter refuses links and paths leaving ``dest``."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    # Python before 3.11.4 (Debian 12 ships 3.11.2) has no extraction filters: check by hand.
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(dest.resolve()):
            raise GitError(f"unexpected entry {member.name!r} in the chart archive")
    tar.extractall(dest)


def _read_values(remote: GitRemote, sha: str, target: DeliveryTargetResource) -> str:
    text = remote.read_file(sha, target.values_path)
    if text is None:
        raise GitError(f"{target.values_path} does not exist on {remote.branch} at {sha}")
    return text


def _result(commit: ManifestCommit) -> dg.Output[ManifestCommit]:
    return dg.Output(commit, metadata={
        "commit": commit.sha, "created": commit.created, "source_commit": commit.source_sha,
        "attempts": commit.attempts, "reason": commit.reason,
    })
