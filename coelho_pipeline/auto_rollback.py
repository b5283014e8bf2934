"""Opt-in auto-rollback (COELHO_AUTO_ROLLBACK=true): the policy that decides whether a failed
delivery is rolled back, and to what.

Only a failure of what was deployed counts — the sync failed, the Application turned Degraded, or
the rollout verification failed — never a failed build or a refused push (nothing new runs then).
The guards, each with its reason in the sensor's log:

* never roll back a rollback (nor a run this policy started);
* never while deliveries are held (a rollback already happened);
* only when no other delivery or rollback is in flight (it may fix or supersede this one);
* ignore stale failures: one that ended long ago (a sensor catching up), or one after which
  another delivery or rollback already reached the cluster;
* the target is the newest earlier delivery whose rollout verification passed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import dagster as dg

from coelho_pipeline.hold import current_hold
from coelho_pipeline.targets import Target

# Key of the failure metadata that says what kind of deploy failure a step reports.
DEPLOY_FAILURE_KEY = "deploy_failure"
# Tag on the rollback runs this policy requests: the failed run's id.
AUTO_ROLLBACK_TAG = "coelho/auto-rollback-of"
# A failure that ended longer ago than this is history, not something to act on now.
STALE_AFTER_SECONDS = 900.0
# How many earlier deliveries to look through for the last verified one.
VERIFIED_LOOKBACK = 100

_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


class DeployFailure(str, Enum):
    SYNC = "sync failed"
    DEGRADED = "degraded"
    UNHEALTHY = "never became healthy"
    VERIFICATION = "verification failed"


@dataclass(frozen=True)
class Decision:
    target: str | None  # the source commit to roll back to; None: do not act
    reason: str


def decide(instance: dg.DagsterInstance, target: Target, run: dg.DagsterRun, failure_kind: str | None, *,
           writer_tags: Mapping[str, str], now: float | None = None) -> Decision:
    """Whether to roll back after ``run`` (a failed delivery of ``target``) failed with ``failure_kind``;
    ``writer_tags`` are those of the target's deliveries and rollbacks (jobs.delivery_tags)."""
    now = time.time() if now is None else now
    sha = run.tags.get("dagster/partition") or ""
    if run.job_name != target.delivery_job:
        return Decision(None, f"run {run.run_id} is not a delivery ({run.job_name}): a rollback is never rolled back")
    if failure_kind not in {k.value for k in DeployFailure}:
        return Decision(None, f"the delivery of {sha or run.run_id} failed before anything new ran in the cluster "
                              "(no sync, health or verification failure): nothing to roll back")
    hold = current_hold(instance, target)
    if hold is not None and hold.held:
        return Decision(None, f"deliveries are already {hold.describe()}: not rolling back again")
    others = [r for r in instance.get_runs(dg.RunsFilter(tags=dict(writer_tags), statuses=_IN_FLIGHT), limit=5)
              if r.run_id != run.run_id]
    if others:
        what = ", ".join(f"{r.job_name} {r.tags.get('dagster/partition', '')[:12]} ({r.run_id[:8]})" for r in others)
        return Decision(None, f"another delivery is in flight ({what}): not rolling back under it")
    record = instance.get_run_record_by_id(run.run_id)
    started = (record.start_time or record.create_timestamp.timestamp()) if record else now
    ended = _ended(record) if record else now
    if now - ended > STALE_AFTER_SECONDS:
        return Decision(None, f"the failure of {sha} ended {now - ended:.0f}s ago: stale, not acted on")
    for key in ("argocd_sync", "rollback_commit"):
        latest = instance.fetch_materializations(target.key(key), limit=1).records
        if latest and latest[0].timestamp > started and latest[0].run_id != run.run_id:
            return Decision(None, f"{key} of {latest[0].partition_key} reached the cluster after this delivery "
                                  f"started: the failure of {sha} is stale")
    # A version someone already rolled back from is not a target, however well it verified.
    rejected = set()
    for record in instance.fetch_materializations(target.key("rollback_commit"), limit=VERIFIED_LOOKBACK).records:
        value = record.asset_materialization.metadata.get("rolled_back_from") if record.asset_materialization else None
        if value is not None and value.value:
            rejected.add(str(value.value))
    for candidate in instance.fetch_materializations(target.key("argocd_sync"), limit=VERIFIED_LOOKBACK).records:
        md = candidate.asset_materialization.metadata if candidate.asset_materialization else {}
        outcome = md.get("verification")
        if (candidate.partition_key and candidate.partition_key not in (sha, *rejected)
                and candidate.timestamp < started and outcome is not None and outcome.value == "passed"):
            return Decision(candidate.partition_key, f"the delivery of {sha} {failure_kind}: rolling back to "
                                                     f"{candidate.partition_key}, the last verified delivery")
    return Decision(None, f"the delivery of {sha} {failure_kind}, but no earlier delivery passed verification "
                          "(deliveries made before verification existed, or inconclusive ones, do not count)"
                          + (f" and was not rolled back from since ({', '.join(sorted(r[:12] for r in rejected))})"
                             if rejected else "") + ": nothing to roll back to")


def still_current(instance: dg.DagsterInstance, target: Target, failed_run_id: str,
                  deployed_source: str | None) -> str | None:
    """Why an auto-rollback requested for ``failed_run_id`` must not write any more, or None.

    Checked by the rollback itself, when it runs: between the decision and the rollback a newer
    delivery may have been queued ahead of it and reached the cluster."""
    failed = instance.get_run_by_id(failed_run_id)
    if failed is None:
        return f"the failed run {failed_run_id} is gone from the instance"
    sha = failed.tags.get("dagster/partition", "")
    if deployed_source not in (None, sha):
        return (f"the branch now deploys {deployed_source}, not the failed {sha}: a newer delivery landed after the "
                "failure, so this auto-rollback would undo it")
    record = instance.get_run_record_by_id(failed_run_id)
    ended = _ended(record) if record else 0.0
    latest = instance.fetch_materializations(target.key("argocd_sync"), limit=1).records
    if latest and latest[0].timestamp > ended:
        return (f"argocd_sync of {latest[0].partition_key} reached the cluster after the failure of {sha}: "
                "this auto-rollback is stale")
    return None


def _ended(record: dg.RunRecord) -> float:
    # A run that never started has no end_time; its record's update time is whole seconds only.
    return record.end_time or max(record.create_timestamp.timestamp(), record.update_timestamp.timestamp())
