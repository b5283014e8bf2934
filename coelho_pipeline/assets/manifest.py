"""The values.yaml a commit's images give, checked; and the one Git commit that publishes it."""

from collections.abc import Iterator, Sequence

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.delivery.plan import desired_writes
from coelho_pipeline.delivery.publish import PushPolicy, Publication, delivery, ensure_on_branch, prepare, publish
from coelho_pipeline.delivery.verify import verify
from coelho_pipeline.domain import ImageRef, ManifestCommit, SourceCommit, ValuesEdit, VerifiedValues
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.hold import refuse_if_held
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import RegistryResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.targets import Target

TAGS_EXIST = "tags_exist_in_registry"
CHART_RENDERS = "chart_renders_with_built_images"


def build_helm_values(target: Target, apps: Sequence[App]) -> dg.AssetsDefinition:
    from coelho_pipeline.assets.images import image_key

    key = target.key("helm_values")

    @dg.asset(
        key=key,
        partitions_def=source_commits(target),
        group_name=target.name("delivery"),
        kinds={"yaml", "helm"},
        ins={"source_commit": dg.AssetIn(target.key("source_commit")),
             **{f"image_{app.asset_name}": dg.AssetIn(image_key(target, app)) for app in apps}},
        retry_policy=RETRY_POLICY,
        required_resource_keys=required_keys(target, "git", "registry", "target"),
        check_specs=[
            dg.AssetCheckSpec(TAGS_EXIST, asset=key, blocking=True,
                              description="Every image this delivery writes into the file exists in the registry."),
            dg.AssetCheckSpec(CHART_RENDERS, asset=key, blocking=True,
                              description="The chart renders with these values and every app Deployment "
                                          "runs exactly the image delivered for this commit."),
        ],
    )
    def helm_values(context: dg.AssetExecutionContext, source_commit: SourceCommit,
                    **images: ImageRef) -> Iterator[dg.Output[ValuesEdit] | dg.AssetCheckResult]:
        """Each app's pushed image (repository and tag) written into values.yaml at the branch tip.

        Only the scalars that change differ; the same writes are re-applied by manifest_commit to
        whatever tip it pushes onto, and verified again there (the render skipped only for this very
        text on this very tip in the same run: ``ValuesEdit.verified``).
        """
        res = TargetResources(context.resources, target)
        yield from _helm_values(context, source_commit, images, res.git, res.registry, res.target)

    return helm_values


def _helm_values(context: dg.AssetExecutionContext, source_commit: SourceCommit, images: dict[str, ImageRef],
                 git: GitResource, registry: RegistryResource,
                 target: DeliveryTargetResource) -> Iterator[dg.Output[ValuesEdit] | dg.AssetCheckResult]:
    remote = git.remote()
    reg = registry.registry()
    writes = desired_writes(target.catalog(), list(images.values()))
    try:
        tip = remote.fetch()
        ensure_on_branch(remote, source_commit.sha, tip)
        applied = prepare(remote, tip, source_sha=source_commit.sha, writes=writes, target=target)
        checked = verify(remote, tip, applied.text, target, reg, apps=applied.changed_apps)
    except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
        raise failure(e) from e
    for note in applied.notes:
        context.log.warning(note)
    edit = ValuesEdit(
        path=target.values_path, base_sha=tip, writes=writes,
        changes=tuple((c.path, c.old, c.new) for c in applied.changes), notes=applied.notes,
        verified=VerifiedValues(context.run_id, tip, VerifiedValues.of(applied.text)) if checked.ok else None,
    )
    yield dg.Output(edit, metadata={
        "path": target.values_path,
        "base_commit": tip,
        "values_changed": len(applied.changes),
        "changes": dg.MetadataValue.md("\n".join(f"- `{c.path}`: `{c.old}` → `{c.new}` (line {c.line})"
                                                  for c in applied.changes) or "no change"),
        "images": dg.MetadataValue.md("\n".join(f"- {i.app}: `{i.ref}`" for i in images.values())),
    })
    yield dg.AssetCheckResult(
        check_name=TAGS_EXIST, passed=not checked.missing_images,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {m}" for m in checked.missing_images)
                                                  or "none")},
    )
    yield dg.AssetCheckResult(
        check_name=CHART_RENDERS, passed=not checked.render_problems,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in checked.render_problems)
                                                  or "none")},
    )
    for problem in (*checked.missing_images, *checked.render_problems):
        context.log.error(problem)


def build_manifest_commit(target: Target) -> dg.AssetsDefinition:
    """The one commit that publishes a delivery; one writer per project (pool and run tag)."""

    @dg.asset(key=target.key("manifest_commit"), partitions_def=source_commits(target),
              group_name=target.name("delivery"), kinds={"git"}, pool=target.pool, retry_policy=RETRY_POLICY,
              ins={"source_commit": dg.AssetIn(target.key("source_commit")),
                   "helm_values": dg.AssetIn(target.key("helm_values"))},
              required_resource_keys=required_keys(target, "git", "registry", "target"))
    def manifest_commit(context: dg.AssetExecutionContext, source_commit: SourceCommit,
                        helm_values: ValuesEdit) -> dg.Output[ManifestCommit]:
        """Commits the images to the watched branch as ``Update image tags to <sha> [skip ci]`` (``Promote
        <sha> from <upstream> to <environment>`` in a promoted environment) and pushes.

        One writer at a time (the ``git_manifest`` pool and the run-tag limit in dagster.yaml). On every
        attempt the tip is refetched, the source commit must still be on it, the writes are re-applied
        (never over a newer delivery's tag) and what is about to be pushed is verified again (its images
        looked up; the chart rendered unless helm_values rendered this very text on this very tip in the
        same run), so a run of this step alone cannot publish a missing image or values the chart does
        not render with. A
        rerun finds its earlier commit by the ``Source-Commit`` trailer and makes no second one.
        Nothing is pushed while deliveries are held after a rollback.
        """
        res = TargetResources(context.resources, target)
        refuse_if_held(context.instance, target, source_commit.sha)
        publication = delivery(source_commit.sha, helm_values.writes, promoted_from=target.promote_from or "",
                               environment=target.environment.name)
        # Rendered by helm_values in this very run (a step run alone, or a re-execution, renders again).
        verified = helm_values.verified if helm_values.verified and helm_values.verified.run_id == context.run_id \
            else None
        return _manifest_commit(context, publication, res.git, res.registry, res.target, verified)

    return manifest_commit


def _manifest_commit(context: dg.AssetExecutionContext, publication: Publication, git: GitResource,
                     registry: RegistryResource, target: DeliveryTargetResource,
                     verified: VerifiedValues | None) -> dg.Output[ManifestCommit]:
    try:
        commit = publish(git.remote(), publication, target=target,
                         registry=registry.registry(), log=context.log.info,
                         policy=PushPolicy(target.push_attempts, tuple(target.push_backoff_seconds)),
                         verified=verified)
    except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
        raise failure(e) from e
    return dg.Output(commit, metadata={
        "commit": commit.sha, "created": commit.created, "source_commit": commit.source_sha,
        "attempts": commit.attempts, "reason": commit.reason, "branch_head": commit.branch_head,
        "changes": dg.MetadataValue.md("\n".join(f"- `{p}`: `{o or '(empty)'}` → `{n}`"
                                                 for p, o, n in commit.changes) or "none"),
    })
