"""One image asset per app, tagged with the source commit SHA; unchanged apps keep their image."""

from collections.abc import Iterator, Sequence

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.domain import ImageRef, SourceCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import ImageBuilderResource, RegistryResource


def image_key(app: App) -> dg.AssetKey:
    return dg.AssetKey(["image", app.asset_name])


def build_image_assets(apps: Sequence[App]) -> dg.AssetsDefinition:
    """A multi-asset with one subsettable image asset per app: a rerun can rebuild just one."""

    @dg.multi_asset(
        name="images",
        outs={
            app.asset_name: dg.AssetOut(
                key=image_key(app), is_required=False, group_name="delivery", kinds={"docker"},
                description=f"Image of {app.context}, pushed as <COELHO_REGISTRY>/{app.image}:<sha>.",
            )
            for app in apps
        },
        ins={"source_commit": dg.AssetIn("source_commit")},
        partitions_def=source_commits,
        can_subset=True,
        retry_policy=RETRY_POLICY,
    )
    def images(
        context: dg.AssetExecutionContext,
        source_commit: SourceCommit,
        git: GitResource,
        builder: ImageBuilderResource,
        registry: RegistryResource,
    ) -> Iterator[dg.Output[ImageRef]]:
        reg = registry.registry()
        for app in apps:
            if image_key(app) not in context.selected_asset_keys:
                continue
            plan = source_commit.plan(app.name)
            repository = plan.repository or reg.repository(app.image)
            try:
                if not plan.rebuild:
                    assert plan.deployed_tag  # a kept image always has a tag (see plan_app)
                    ref = ImageRef(app.name, repository, plan.deployed_tag, reg.digest(repository, plan.deployed_tag),
                                   rebuilt=False, reason=plan.reason)
                    context.log.info(f"{app.name}: not rebuilt, keeps {ref.ref} ({plan.reason})")
                    yield _output(app, ref)
                    continue
                existing = reg.digest(repository, source_commit.sha)
                if existing:
                    # Tags are immutable commit SHAs: an earlier run already pushed this exact image.
                    yield _output(app, ImageRef(app.name, repository, source_commit.sha, existing, rebuilt=False,
                                                new_tag=True,
                                                reason=f"{plan.reason}; already in the registry from an earlier run"))
                    continue
                context.log.info(f"{app.name}: building {repository}:{source_commit.sha} ({plan.reason})")
                built = builder.builder().build_and_push(
                    context_tar=git.remote().archive(source_commit.sha, app.context),
                    repository=repository, tag=source_commit.sha,
                    log=lambda lines, name=app.name: context.log.info(
                        "\n".join(f"[{name}] {line}" for line in lines.splitlines())),
                )
            except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
                raise failure(e, context=f"image of {app.context} at {source_commit.sha[:12]}") from e
            ref = ImageRef(app.name, repository, source_commit.sha, built.digest, rebuilt=True, new_tag=True,
                           reason=plan.reason)
            yield _output(app, ref, image_id=built.image_id)

    return images


def _output(app: App, ref: ImageRef, **extra: object) -> dg.Output[ImageRef]:
    return dg.Output(ref, output_name=app.asset_name, metadata={
        "image": ref.ref,
        "digest": ref.digest or "unknown",
        "rebuilt": ref.rebuilt,
        "reason": ref.reason,
        **extra,
    })
