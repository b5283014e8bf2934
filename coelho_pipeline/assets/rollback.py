"""The way back: roll back to an earlier delivery, hold automation, release the hold."""

from datetime import datetime

import dagster as dg

from coelho_pipeline.assets.deploy import sync_and_wait, verify_deployment
from coelho_pipeline.auto_rollback import AUTO_ROLLBACK_TAG, still_current
from coelho_pipeline.delivery.publish import PushPolicy, ensure_on_branch, publish
from coelho_pipeline.delivery.rollback import RollbackRefused, rollback_publication
from coelho_pipeline.errors import failure
from coelho_pipeline.hold import current_hold, hold_event
from coelho_pipeline.notify import Notification
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.targets import Target


class RollbackConfig(dg.Config):
    reason: str = "rolled back by hand"


class ReleaseConfig(dg.Config):
    reason: str = "released by hand"


def build_rollback_commit(target: Target) -> dg.AssetsDefinition:
    @dg.asset(key=target.key("rollback_commit"), partitions_def=source_commits(target),
              group_name=target.name("ops"), kinds={"git", "kubernetes"}, pool=target.pool,
              required_resource_keys=required_keys(target, "git", "registry", "target", "argocd", "notify",
                                                   "verification"))
    def rollback_commit(context: dg.AssetExecutionContext, config: RollbackConfig) -> dg.MaterializeResult:
        """Rolls back to this partition's delivery: ``Roll back to <sha> [skip ci]`` brings back every app's
        image as that delivery deployed it, through the same single writer (verified, retried), then Argo
        CD is synced to it. The hold is set first, so no automation redeploys the newer commit meanwhile.
        """
        res = TargetResources(context.resources, target)
        return _rollback_commit(context, config, target, res)

    return rollback_commit


def _rollback_commit(context: dg.AssetExecutionContext, config: RollbackConfig, where: Target,
                     res: TargetResources) -> dg.MaterializeResult:
    git, registry, target, argocd = res.git, res.registry, res.target, res.argocd
    notify, verification = res.notify, res.verification
    old = context.partition_key
    remote = git.remote()
    try:
        tip = remote.fetch()
        failed_run = context.run.tags.get(AUTO_ROLLBACK_TAG)
        if failed_run:
            stale = still_current(context.instance, where, failed_run, remote.last_delivered_source())
            if stale:
                raise RollbackRefused(f"auto-rollback to {old} not done: {stale}; nothing written, no hold set")
        remote.ensure_commit(old)
        ensure_on_branch(remote, old, tip)
        delivered_at = _delivered_at(context.instance, where, remote, old, tip)
        publication = rollback_publication(remote, old_sha=old, delivered_at=delivered_at, target=target,
                                           registry=registry.registry())
    except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
        raise failure(e) from e
    hold = hold_event(where, held=True, by=f"rollback to {old[:12]}", reason=config.reason, rolled_back_to=old)
    context.log_event(hold)
    application = f"{argocd.namespace}/{argocd.app_name}"
    notify.send(context.log, Notification.hold_set(
        application=application, revision=tip, source_commit=old, reason=config.reason,
        since=datetime.fromisoformat(str(hold.metadata["since"].value))))
    try:
        commit = publish(remote, publication, target=target, registry=registry.registry(), log=context.log.info,
                         policy=PushPolicy(target.push_attempts, tuple(target.push_backoff_seconds)))
    except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
        raise failure(e) from e
    synced = sync_and_wait(context, argocd, remote, target, commit)
    # Verified like a delivery and reported, never failed on: the rollback is pushed and synced by now,
    # and a rollback is never rolled back in turn.
    outcome, verified = "not verified", "not run: no cluster"
    if synced:
        try:
            report = verify_deployment(context, argocd, verification)
            outcome, verified = report.outcome.value, report.summary()
        except dg.Failure as e:
            outcome, verified = "error", f"rollout verification could not run: {e.description}"
            context.log.warning(verified)
    synced = synced or {"sync": "not requested: no cluster"}
    rolled_back_from = dict(publication.trailers).get("Rolled-Back-From", "")
    notify.send(context.log, Notification.rolled_back(application=application, revision=commit.sha, to_commit=old,
                                                      from_commit=rolled_back_from, details={"verification": verified}))
    report = (f"Rolled back to `{old}` (from `{rolled_back_from}`) with commit `{commit.sha}` ({commit.reason}); "
              f"Argo CD: {synced.get('sync', '')} {synced.get('health', '')} at {synced.get('revision', '-')}; "
              f"{verified}.\n\n"
              f"Deliveries are held: `coelho release` (or the {where.name('release_hold')} job) delivers the newest "
              "commit again.")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report),
        "rolled_back_to": old,
        "images_from": delivered_at,
        "commit": commit.sha,
        "created": commit.created,
        "reason": commit.reason,
        "rolled_back_from": rolled_back_from,
        "verification": outcome,
        "verification_summary": verified,
        "changes": dg.MetadataValue.md("\n".join(f"- `{p}`: `{o or '(empty)'}` → `{n}`"
                                                 for p, o, n in commit.changes) or "none"),
        **{f"argocd_{k}": v for k, v in synced.items()},
    })


def _delivered_at(instance: dg.DagsterInstance, target: Target, remote: GitRemote, old: str, tip: str) -> str:
    """The commit whose values.yaml holds what the delivery of ``old`` deployed, still on the branch."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=target.key("manifest_commit"), asset_partitions=[old]), limit=1).records
    recorded = records[0].asset_materialization.metadata.get("commit") if records else None
    candidates = [str(recorded.value)] if recorded is not None else []
    candidates.append(remote.find_manifest_commit(old) or "")
    for sha in filter(None, candidates):
        if remote.has_commit(sha) and remote.is_ancestor(sha, tip):
            return sha
    raise RollbackRefused(f"cannot roll back to {old}: it was never delivered on {remote.branch} (no "
                          "manifest_commit materialization for that partition and no commit with "
                          f"'Source-Commit: {old}' on the branch); nothing written")


def build_release_hold(target: Target) -> dg.JobDefinition:
    """The job that lifts ``target``'s hold."""

    @dg.op(name=target.name("lift_hold"), required_resource_keys=required_keys(target, "notify", "argocd"))
    def lift_hold(context: dg.OpExecutionContext, config: ReleaseConfig) -> dg.Output[None]:
        """Releases the hold; the push sensor then delivers the newest commit on the branch."""
        res = TargetResources(context.resources, target)
        return _lift_hold(context, config, target, res.notify, res.argocd)

    @dg.job(name=target.name("release_hold"),
            description="Lift the hold a rollback set; the sensor delivers the newest commit.")
    def release_hold() -> None:
        lift_hold()

    return release_hold


def _lift_hold(context: dg.OpExecutionContext, config: ReleaseConfig, target: Target, notify: NotifierResource,
               argocd: ArgoCDResource) -> dg.Output[None]:
    hold = current_hold(context.instance, target)
    if hold is None or not hold.held:
        context.log.info("no hold is set; nothing to release")
        return dg.Output(None, metadata={"report": dg.MetadataValue.md("No hold is set; nothing to release.")})
    context.log.info(f"releasing the hold ({hold.describe()})")
    context.log_event(hold_event(target, held=False, by=target.name("release_hold"), reason=config.reason,
                                 rolled_back_to=hold.rolled_back_to))
    notify.send(context.log, Notification.hold_released(
        application=f"{argocd.namespace}/{argocd.app_name}", revision=hold.rolled_back_to,
        source_commit=hold.rolled_back_to, since=datetime.fromisoformat(hold.since)))
    if not target.promote_from:
        then = "the push sensor delivers the newest commit on its next tick"
    elif target.environment.promotion == "auto":
        then = f"the promotion sensor promotes the newest delivery verified in {target.promote_from}"
    else:
        then = f"run {target.delivery_job} to promote a delivery verified in {target.promote_from}"
    return dg.Output(None, metadata={"report": dg.MetadataValue.md(f"Released the hold ({hold.describe()}); {then}.")})
