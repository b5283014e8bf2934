"""The Git push sensor: a new commit on the watched branch becomes a partition and a delivery run;
and the failure sensor that notifies a failed delivery.

Besides new commits, every tick without one looks at the delivery it requested last: when that run
failed transiently (every failed step said so) or was lost (its worker died, it never started), the
commit is requested again under a new run key, at most ``MAX_DELIVERY_ATTEMPTS`` runs per commit.
A terminal failure (bad input, refused credentials, a failed build) is not retried: it needs a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import dagster as dg
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, RUN_FAILURE_REASON_TAG, WILL_RETRY_TAG

from coelho_pipeline import auto_rollback
from coelho_pipeline.auto_rollback import DEPLOY_FAILURE_KEY
from coelho_pipeline.delivery.promotion import promotion_refusal
from coelho_pipeline.domain import CommitInfo, is_pipeline_commit
from coelho_pipeline.hold import Hold, current_hold
from coelho_pipeline.instance import share_instance
from coelho_pipeline.jobs import TargetJobs, delivery_tags
from coelho_pipeline.notify import Notification
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys, sensor_resources
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitError, GitRemote, GitResource
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.resources.verify import VerificationResource
from coelho_pipeline.targets import Target

SENSOR_NAME = "git_push_sensor"
DEFAULT_POLL_SECONDS = 4.0  # see Settings.poll_interval
SOURCE_SHA_TAG = "coelho/source-sha"
REDELIVERY_TAG = "coelho/redelivery"

# Runs of one commit, the first included (Dagster's own run retries count too): a remote that stays
# down gets a few more chances over the next ticks, not an endless loop of runs.
MAX_DELIVERY_ATTEMPTS = 4
# How far below the head a tick after a force-push looks for the newest commit that is not the pipeline's.
REWRITE_WALK_LIMIT = 200
# Bound of every git command (and of the wait for the cache clone's lock) within one tick.
SENSOR_GIT_TIMEOUT_SECONDS = 45.0

# Why Dagster ended a run without a step failure: the run never ran to the end, so nothing about the
# commit was judged. (None: marked failed from outside, e.g. the code server saw its worker die.)
_LOST_REASONS = frozenset({None, "UNEXPECTED_TERMINATION", "START_TIMEOUT", "RUN_WORKER_RESTART", "UNKNOWN"})


def build_git_push_sensor(target: Target, jobs: TargetJobs,
                          poll_interval_seconds: float = DEFAULT_POLL_SECONDS) -> dg.SensorDefinition:
    """``target``'s push sensor, looking at the branch every ``poll_interval_seconds`` (COELHO_POLL_INTERVAL_SECONDS).

    The daemon evaluates sensors at most every 5 s, so a shorter interval gains nothing; the push
    webhook (coelho webhook) asks for an evaluation at once instead.
    """
    scope = _Scope(target, jobs.deliver_commit.name, source_commits(target))

    @dg.sensor(name=target.name(SENSOR_NAME), job=jobs.deliver_commit,
               minimum_interval_seconds=max(1, round(poll_interval_seconds)),
               default_status=dg.DefaultSensorStatus.RUNNING)
    # **_: called directly (as the tests do), a sensor also gets its resources as keyword arguments.
    def git_push_sensor(context: dg.SensorEvaluationContext, **_: object) -> dg.SensorResult | dg.SkipReason:
        """Watches the branch with ls-remote; delivers the newest new commit, records the ones it supersedes."""
        # Its git resource is built on the code server's shared instance, not declared: a declared
        # resource costs a new DagsterInstance every tick (coelho_pipeline/instance.py).
        with sensor_resources(context, target, "git") as resources:
            return _evaluate(context, scope, resources.git)

    return git_push_sensor


def _evaluate(context: dg.SensorEvaluationContext, scope: _Scope, git: GitResource) -> dg.SensorResult | dg.SkipReason:
    # A tick must end well within Dagster's sensor evaluation timeout (60 s), also when the remote
    # hangs or a delivery holds the cache clone: then the tick is skipped and the next one tries again.
    remote = replace(git.remote(), network_timeout=SENSOR_GIT_TIMEOUT_SECONDS, lock_timeout=SENSOR_GIT_TIMEOUT_SECONDS)
    try:
        return _tick(context, scope, remote, git.author_email)
    except GitError as e:
        if not e.timed_out:  # refused, unknown host, 4xx: a failed tick, red in the UI, tried again next tick
            raise
        return dg.SkipReason(f"git did not answer in time, trying again on the next tick: {e}")


@dataclass(frozen=True)
class _Scope:
    """The names one target's sensor works with."""

    target: Target
    job_name: str
    partitions: dg.DynamicPartitionsDefinition

    @property
    def sensor_name(self) -> str:
        return self.target.name(SENSOR_NAME)

    @property
    def source_key(self) -> dg.AssetKey:
        return self.target.key("source_commit")


def _tick(context: dg.SensorEvaluationContext, scope: _Scope, remote: GitRemote,
          pipeline_email: str) -> dg.SensorResult | dg.SkipReason:
    head = remote.ls_remote_head()
    if head is None:
        return dg.SkipReason(f"branch {remote.branch} does not exist on {remote.display_url}")
    if head == context.cursor:
        return _redeliver_or_skip(context, scope, dg.SkipReason(f"no new commit on {remote.branch} (head {head[:12]})"),
                                  cursor=None, remote=remote, pipeline_email=pipeline_email, head=head)
    remote.fetch()
    cursor = context.cursor
    rewritten = bool(cursor) and not (remote.has_commit(cursor) and remote.is_ancestor(cursor, head))
    if rewritten:
        return _after_rewrite(context, scope, remote, pipeline_email, head)
    new = remote.commits_between(cursor, head)
    candidates = [c for c in new if not is_pipeline_commit(c, pipeline_email)]
    if not candidates:
        skip = dg.SkipReason(f"only pipeline commits since {str(context.cursor)[:12]}; head {head[:12]}")
        return _redeliver_or_skip(context, scope, skip, cursor=head, remote=remote, pipeline_email=pipeline_email,
                                  head=head)
    return _deliver(context, scope, candidates[0], candidates[1:], head, run_key=candidates[0].sha)


def _after_rewrite(context: dg.SensorEvaluationContext, scope: _Scope, remote: GitRemote, pipeline_email: str,
                   head: str) -> dg.SensorResult:
    """A force-push replaced the history the cursor was on. Deliver the newest commit of the new history
    that is not the pipeline's, even when the pipeline's own commit landed on top of it before this tick,
    unless its manifest commit (found by the Source-Commit trailer) is on the new history already."""
    old = str(context.cursor)
    context.log.warning(f"{remote.branch} was rewritten: {old[:12]} is not an ancestor of {head[:12]}")
    # Commits above the merge-base with the old cursor are new; the first human one among them wins.
    above = remote.commits_between(old, head, limit=REWRITE_WALK_LIMIT) if remote.has_commit(old) else []
    humans = [c for c in above if not is_pipeline_commit(c, pipeline_email)]
    if humans:
        newest, superseded = humans[0], humans[1:]
    else:
        # Nothing new above the merge-base (the branch went back, or the old cursor is unknown): the
        # newest human commit below is what the branch now deploys, delivered or not on this history.
        newest = next((c for c in remote.history(head, limit=REWRITE_WALK_LIMIT)
                       if not is_pipeline_commit(c, pipeline_email)), None)
        superseded = []
    if newest is None:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"{remote.branch} was rewritten; no commit but the pipeline's in the last {REWRITE_WALK_LIMIT} "
            f"below {head[:12]}"), cursor=head)
    delivered_by = remote.find_manifest_commit(newest.sha)
    if delivered_by:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"{remote.branch} was rewritten; {newest.sha[:12]} is already delivered by {delivered_by[:12]} "
            "on the new history"), cursor=head)
    # A new run key: a commit delivered on the old history must run again, its manifest commit is gone.
    return _deliver(context, scope, newest, superseded, head, run_key=f"{newest.sha}@rewrite-{old}")


def _deliver(context: dg.SensorEvaluationContext, scope: _Scope, newest: CommitInfo,
             superseded: Sequence[CommitInfo], head: str, *, run_key: str,
             extra_tags: dict[str, str] | None = None) -> dg.SensorResult:
    hold = current_hold(context.instance, scope.target)
    if hold is not None and hold.held:
        # Recorded once (the cursor moves on), not delivered: release_hold delivers the newest later.
        recorded = [newest, *superseded]
        message = f"{hold.describe()}: {len(recorded)} new commit(s) recorded, not delivered"
        context.log.info(message)
        return dg.SensorResult(
            skip_reason=dg.SkipReason(message),
            asset_events=[dg.AssetObservation(asset_key=scope.source_key, metadata={
                "held": hold.describe(),
                "recorded_while_held": dg.MetadataValue.md("\n".join(f"- `{c.sha}` {c.summary}" for c in recorded)),
            })],
            cursor=head,
        )
    observations = []
    if superseded:
        context.log.info(f"delivering {newest.sha[:12]}; superseded without a build: "
                         + ", ".join(c.sha[:12] for c in superseded))
        observations.append(dg.AssetObservation(
            asset_key=scope.source_key,
            metadata={
                "superseded_by": newest.sha,
                "superseded": dg.MetadataValue.md("\n".join(f"- `{c.sha}` {c.summary}" for c in superseded)),
            },
        ))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            partition_key=newest.sha,
            run_key=run_key,
            tags={SOURCE_SHA_TAG: newest.sha, "coelho/superseded": str(len(superseded)), **(extra_tags or {})},
        )],
        dynamic_partitions_requests=[scope.partitions.build_add_request([newest.sha])],
        asset_events=observations,
        cursor=head,
    )


def _redeliver_or_skip(context: dg.SensorEvaluationContext, scope: _Scope, skip: dg.SkipReason, cursor: str | None,
                       *, remote: GitRemote, pipeline_email: str, head: str) -> dg.SensorResult | dg.SkipReason:
    """No new commit to deliver: while held, say so; after a release, deliver the newest commit if it
    is not delivered yet; otherwise request the last delivery again if it failed transiently or was lost."""
    hold = current_hold(context.instance, scope.target)
    if hold is not None and hold.held:
        held = dg.SkipReason(f"{hold.describe()}; {skip.skip_message}")
        return dg.SensorResult(skip_reason=held, cursor=cursor) if cursor else held
    request = _after_release(context, scope, remote, pipeline_email, head, hold) if hold is not None else None
    request = request or _redelivery_request(context, scope)
    if request is None:
        return dg.SensorResult(skip_reason=skip, cursor=cursor) if cursor else skip
    return dg.SensorResult(run_requests=[request], cursor=cursor or context.cursor,
                           dynamic_partitions_requests=[scope.partitions.build_add_request([request.partition_key])])


def _after_release(context: dg.SensorEvaluationContext, scope: _Scope, remote: GitRemote, pipeline_email: str,
                   head: str, hold: Hold) -> dg.RunRequest | None:
    """The newest commit on the branch that is not the pipeline's, when nothing delivered or tried it
    since the hold was released: commits pushed during a hold were recorded and passed over.
    """
    released_at = datetime.fromisoformat(hold.since) if hold.since else None
    newest = next((c for c in remote.history(head, limit=REWRITE_WALK_LIMIT)
                   if not is_pipeline_commit(c, pipeline_email)), None)
    if newest is None or remote.find_manifest_commit(newest.sha):
        return None
    tried = context.instance.get_run_records(filters=dg.RunsFilter(
        job_name=scope.job_name, tags={SOURCE_SHA_TAG: newest.sha}, created_after=released_at), limit=1)
    if tried:
        return None
    return dg.RunRequest(partition_key=newest.sha, run_key=f"{newest.sha}@release-{hold.storage_id}",
                         tags={SOURCE_SHA_TAG: newest.sha, "coelho/superseded": "0",
                               "coelho/after-release": str(hold.storage_id)})


def _redelivery_request(context: dg.SensorEvaluationContext, scope: _Scope) -> dg.RunRequest | None:
    instance = context.instance
    last = instance.get_runs(filters=dg.RunsFilter(job_name=scope.job_name,
                                                   tags={"dagster/sensor_name": scope.sensor_name}), limit=1)
    if not last or SOURCE_SHA_TAG not in last[0].tags:
        return None
    sha = last[0].tags[SOURCE_SHA_TAG]
    every_run = instance.get_runs(filters=dg.RunsFilter(job_name=scope.job_name, tags={SOURCE_SHA_TAG: sha}))
    # Newest first; only the runs since the last success count: a commit delivered on a history that a
    # force-push replaced is delivered again, and those runs get their own attempts.
    succeeded = next((i for i, r in enumerate(every_run) if r.status == dg.DagsterRunStatus.SUCCESS), None)
    runs = every_run[:succeeded]
    if not runs:
        return None  # delivered
    latest = runs[0]  # a manual re-execution or a run retry of this commit counts as well
    if latest.status != dg.DagsterRunStatus.FAILURE:
        return None  # still queued/running, or canceled by someone on purpose
    if dagster_retries(instance, latest):
        return None  # Dagster's run retries (dagster.yaml) take this one
    verdict = failure_kind(instance, latest)
    if verdict == "terminal":
        return None
    if len(runs) >= MAX_DELIVERY_ATTEMPTS:
        context.log.warning(f"delivery of {sha[:12]} failed ({verdict}) in {len(runs)} runs; not requested again")
        return None
    context.log.info(f"delivery of {sha[:12]} failed ({verdict}) in run {latest.run_id}: requesting it again")
    return dg.RunRequest(
        partition_key=sha,
        run_key=f"{sha}@redelivery-{len(runs)}",
        tags={SOURCE_SHA_TAG: sha, "coelho/superseded": "0", REDELIVERY_TAG: str(len(runs)),
              "coelho/redelivery-of": latest.run_id},
    )


def dagster_retries(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether Dagster's run retries (dagster.yaml ``run_retries``) re-execute this failed run, or did.

    Dagster writes its decision as a tag just after the run's status turns FAILURE, so a sensor that
    ticks in between sees neither; it then asks the rule Dagster is about to apply, rather than
    requesting a second run of the commit alongside Dagster's retry."""
    if AUTO_RETRY_RUN_ID_TAG in run.tags:
        return True
    if WILL_RETRY_TAG in run.tags:
        return run.tags[WILL_RETRY_TAG] == "true"
    if not instance.run_retries_enabled:
        return False
    reason = run.tags.get(RUN_FAILURE_REASON_TAG)
    known = reason in {r.value for r in RunFailureReason}  # a tag another Dagster version wrote may not be
    return bool(auto_reexecution_should_retry_run(instance, run, RunFailureReason(reason) if known else None))


def failure_kind(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """"transient" when every failed step raised a failure marked transient (see errors.failure),
    "lost" when the run ended without any step failing, "terminal" otherwise."""
    reason = run.tags.get(RUN_FAILURE_REASON_TAG)
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if not failures:
        return "lost" if reason in _LOST_REASONS else "terminal"
    for record in failures:
        data = record.dagster_event.step_failure_data if record.dagster_event else None
        user = data.user_failure_data if data else None
        transient = user.metadata.get("transient") if user else None
        if not (transient is not None and transient.value is True):
            return "terminal"
    return "transient"


def build_delivery_failure_sensor(target: Target, jobs: TargetJobs) -> dg.SensorDefinition:
    def delivery_failure_sensor(context: dg.RunStatusSensorContext,
                                **_: object) -> dg.RunRequest | dg.SkipReason | None:
        res = TargetResources(context.resources, target)
        return _after_failure(context.for_run_failure(), target, jobs, res.notify, res.argocd, res.verification)

    # The class, not @run_failure_sensor: only it takes resource keys, and these are the target's.
    return dg.RunStatusSensorDefinition(
        name=target.name("delivery_failure_sensor"), run_status=dg.DagsterRunStatus.FAILURE,
        run_status_sensor_fn=delivery_failure_sensor, monitored_jobs=[jobs.deliver_commit],
        request_job=jobs.rollback, default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=required_keys(target, "notify", "argocd", "verification"),
        description="Notifies a failed delivery (the step and its error) once per commit and step; a run that "
                    "Dagster re-executes (run retries) is not a failure yet. With COELHO_AUTO_ROLLBACK=true, a "
                    "failure of what was deployed is rolled back to the last verified delivery (auto_rollback).",
    )


def _after_failure(context: dg.RunFailureSensorContext, target: Target, jobs: TargetJobs, notify: NotifierResource,
                   argocd: ArgoCDResource, verification: VerificationResource) -> dg.RunRequest | dg.SkipReason | None:
    run = context.dagster_run
    if dagster_retries(context.instance, run):
        return None
    failures = context.get_step_failure_events()
    first = failures[0] if failures else None
    step = first.step_key if first else "run"
    error = (first.event_specific_data.error.message if first and first.event_specific_data.error
             else context.failure_event.message or "the run failed")
    sha = run.tags.get("dagster/partition") or run.tags.get(SOURCE_SHA_TAG) or "unknown"
    notify.send(context.log, Notification.delivery_failed(application=f"{argocd.namespace}/{argocd.app_name}",
                                                          source_commit=sha, step=step or "run", error=error.strip()))
    if not verification.auto_rollback:
        return None
    kinds = [f.event_specific_data.user_failure_data.metadata[DEPLOY_FAILURE_KEY] for f in failures
             if f.event_specific_data and f.event_specific_data.user_failure_data
             and DEPLOY_FAILURE_KEY in f.event_specific_data.user_failure_data.metadata]
    kind = kinds[0] if kinds else None
    decision = auto_rollback.decide(context.instance, target, run, kind.value if kind is not None else None,
                                    writer_tags=delivery_tags(target))
    context.log.info(f"auto-rollback: {decision.reason}")
    if decision.target is None:
        return dg.SkipReason(f"auto-rollback: {decision.reason}")
    cause = error.strip().removeprefix("dagster._core.definitions.events.Failure: ")[:300]
    reason = f"auto-rollback: the delivery of {sha[:12]} {kind.value if kind else 'failed'} ({cause})"
    return dg.RunRequest(
        run_key=f"auto-rollback:{run.run_id}", partition_key=decision.target, job_name=jobs.rollback.name,
        run_config={"ops": {target.key("rollback_commit").to_python_identifier(): {"config": {"reason": reason}}}},
        tags={auto_rollback.AUTO_ROLLBACK_TAG: run.run_id},
    )


PROMOTED_FROM_RUN_TAG = "coelho/promoted-from-run"
PROMOTION_POLL_SECONDS = 5


def build_promotion_sensor(target: Target, upstream: Target, jobs: TargetJobs) -> dg.SensorDefinition:
    """``promotion: auto``: the newest delivery to ``upstream`` that reached Synced+Healthy and passed
    verification is promoted to ``target`` (same partition, same images, nothing built).

    It reads the instance's records, not run events, so nothing is lost while ``target`` is held or
    the daemon is down: after a release the newest verified delivery is promoted, unless ``target``
    already had it (a rollback took it back: that stays so). Each upstream run is requested once.
    """

    @dg.sensor(name=target.name("promotion_sensor"), job=jobs.deliver_commit,
               minimum_interval_seconds=PROMOTION_POLL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Promotes each delivery verified in {upstream.environment.name} to "
                           f"{target.environment.name} (promotion: auto).")
    def promotion_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        instance = share_instance(context)
        latest = instance.fetch_materializations(upstream.key("argocd_sync"), limit=1).records
        if not latest or not latest[0].partition_key:
            return dg.SkipReason(f"nothing delivered to {upstream.label} yet")
        sha = latest[0].partition_key
        verified = promotion_refusal(instance, upstream, sha)
        if isinstance(verified, str):
            return dg.SkipReason(f"{sha[:12]} not promoted to {target.environment.name}: {verified}")
        hold = current_hold(instance, target)
        if hold is not None and hold.held:
            return dg.SkipReason(f"{sha[:12]} waits: {target.label} is {hold.describe()}")
        done = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=target.key("manifest_commit"), asset_partitions=[sha]), limit=1).records
        if done:
            return dg.SkipReason(f"{sha[:12]} is already promoted to {target.environment.name}")
        return dg.RunRequest(run_key=f"promote:{verified.run_id}", partition_key=sha,
                             tags={SOURCE_SHA_TAG: sha, PROMOTED_FROM_RUN_TAG: verified.run_id})

    return promotion_sensor
