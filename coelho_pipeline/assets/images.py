"""One image asset per app, tagged with the source commit SHA; unchanged apps keep their image."""

import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.delivery.plan import is_full_sha
from coelho_pipeline.domain import AppPlan, ImageRef, SourceCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import BuiltImage, ImageBuilderResource
from coelho_pipeline.targets import Target


def image_key(target: Target, app: App) -> dg.AssetKey:
    return dg.AssetKey([*target.key("image").path, app.asset_name])


def build_image_assets(target: Target, apps: Sequence[App]) -> dg.AssetsDefinition:
    """A multi-asset with one subsettable image asset per app: a rerun can rebuild just one."""

    @dg.multi_asset(
        name=target.name("images"),
        outs={
            app.asset_name: dg.AssetOut(
                key=image_key(target, app), is_required=False, group_name=target.name("delivery"),
                kinds={"docker"},
                description=f"Image of {app.context}, pushed as <registry>/{app.image}:<sha>.",
            )
            for app in apps
        },
        ins={"source_commit": dg.AssetIn(target.key("source_commit"))},
        partitions_def=source_commits(target),
        can_subset=True,
        retry_policy=RETRY_POLICY,
        required_resource_keys=required_keys(target, "git", "builder", "registry"),
    )
    def images(context: dg.AssetExecutionContext, source_commit: SourceCommit) -> Iterator[dg.Output[ImageRef]]:
        res = TargetResources(context.resources, target)
        git, builder = res.git, res.builder
        reg = res.registry.registry()
        selected = [app for app in apps if image_key(target, app) in context.selected_asset_keys]
        plans = {app.name: source_commit.plan(app.name) for app in selected}
        repositories = {app.name: plans[app.name].repository or reg.repository(app.image) for app in selected}
        # One registry question per app, side by side: a kept image's digest, or whether this commit's
        # image is already there.
        try:
            digests = reg.digests([(repositories[app.name],
                                    source_commit.sha if plans[app.name].rebuild else plans[app.name].deployed_tag)
                                   for app in selected])
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e, context=f"images at {source_commit.sha[:12]}: registry lookups") from e
        kept: list[tuple[App, ImageRef]] = []
        to_build: list[tuple[App, str, AppPlan]] = []
        for app, digest in zip(selected, digests, strict=True):
            plan, repository = plans[app.name], repositories[app.name]
            if not plan.rebuild:
                assert plan.deployed_tag  # a kept image always has a tag (see plan_apps)
                kept.append((app, ImageRef(app.name, repository, plan.deployed_tag, digest, rebuilt=False,
                                           new_tag=plan.promoted, reason=plan.reason)))
            elif digest:
                # Tags are immutable commit SHAs: an earlier run already pushed this exact image.
                kept.append((app, ImageRef(app.name, repository, source_commit.sha, digest, rebuilt=False,
                                           new_tag=True,
                                           reason=f"{plan.reason}; already in the registry from an earlier run")))
            else:
                to_build.append((app, repository, plan))
        if kept:  # one line for all of them: a large catalog's log is not a line per unchanged app
            context.log.info(f"not rebuilt ({len(kept)}): " + "; ".join(f"{app.name} keeps {ref.ref} ({ref.reason})"
                                                                        for app, ref in kept))
        for app, ref in kept:
            yield _output(app, ref)
        yield from _build_all(context, to_build, source_commit.sha, git, builder)

    return images


def _build_all(context: dg.AssetExecutionContext, to_build: Sequence[tuple[App, str, AppPlan]], sha: str,
               git: GitResource, builder: ImageBuilderResource) -> Iterator[dg.Output[ImageRef]]:
    """Builds and pushes the apps side by side, at most ``builder.concurrency`` at a time.

    Only this thread writes to Dagster: the build threads hand their log lines over a queue, which
    is drained while they run, so every line still reaches the step's log as it happens.
    """
    if not to_build:
        return
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    remote = git.remote()
    # Archives first, one at a time: the git cache clone is not shared across threads.
    contexts = {}
    for app, _, _ in to_build:
        try:
            contexts[app.name] = remote.archive(sha, app.context)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e, context=f"image of {app.context} at {sha[:12]}") from e

    def build(app: App, repository: str, plan: AppPlan) -> BuiltImage:
        # The image it replaces is the cache source, if it is in this registry (is_full_sha: not "latest").
        previous = plan.deployed_tag if plan.deployed_tag and is_full_sha(plan.deployed_tag) \
            and plan.repository == repository else None
        with builder.own_builder() as own:
            return own.build_and_push(
                context_tar=contexts[app.name], repository=repository, tag=sha, previous_tag=previous,
                log=lambda text: lines.put("\n".join(f"[{app.name}] {line}" for line in text.splitlines())))

    def drain() -> None:
        while True:
            try:
                context.log.info(lines.get_nowait())
            except queue.Empty:
                return

    workers = max(1, min(builder.concurrency, len(to_build)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-build") as pool:
        futures = {}
        for app, repository, plan in to_build:
            context.log.info(f"{app.name}: building {repository}:{sha} ({plan.reason})")
            futures[pool.submit(build, app, repository, plan)] = (app, repository, plan.reason)
        pending = set(futures)
        failed: list[tuple[App, BaseException]] = []
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                app, repository, why = futures[future]
                error = future.exception()
                if error is not None:
                    failed.append((app, error))
                    continue
                built = future.result()
                ref = ImageRef(app.name, repository, sha, built.digest, rebuilt=True, new_tag=True, reason=why)
                yield _output(app, ref, image_id=built.image_id)
        drain()
    if failed:
        # Every other build finished (and was recorded); the first failure fails the step, the rest are logged.
        for app, error in failed[1:]:
            context.log.error(f"{app.name}: {error}")
        app, error = failed[0]
        raise failure(error, context=f"image of {app.context} at {sha[:12]}") from error


def _output(app: App, ref: ImageRef, **extra: object) -> dg.Output[ImageRef]:
    return dg.Output(ref, output_name=app.asset_name, metadata={
        "image": ref.ref,
        "digest": ref.digest or "unknown",
        "rebuilt": ref.rebuilt,
        "reason": ref.reason,
        **extra,
    })
