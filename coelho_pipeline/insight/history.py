"""The delivery history as the pipeline recorded it in the Dagster instance.

Read from three kinds of record, and nothing else:

* ``argocd_sync`` materializations: a delivery reached Synced+Healthy (``synced_at``) at a
  revision, with its rollout verification and the source commits it brought (delivery.deployed);
* ``rollback_commit`` materializations: a rollback, what it went back to and from, and whether
  Argo CD reached Synced+Healthy at it;
* failed ``deliver_commit`` runs whose ``argocd_sync`` step reported a deploy failure (the sync
  failed, the Application turned Degraded or never Healthy, the verification failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from coelho_pipeline.auto_rollback import DEPLOY_FAILURE_KEY
from coelho_pipeline.delivery.deployed import DEPLOYED_COMMITS_KEY, SYNCED_AT_KEY, DeployedCommit
from coelho_pipeline.targets import Target

ROLLED_BACK = "rolled back"
# Each kind of record is read back at most this far (the newest first): years of deliveries.
MAX_RECORDS = 20_000
_PAGE = 1000


@dataclass(frozen=True)
class Deployment:
    """A revision of the branch reaching Synced+Healthy for the first time."""

    at: datetime
    revision: str
    source_sha: str  # the delivered commit, or the one a rollback went back to
    rollback: bool
    verification: str  # passed, failed, inconclusive, error, not recorded
    commits: tuple[DeployedCommit, ...] = ()  # what it brought to production; none for a rollback


@dataclass
class Delivery:
    """Every run of one source commit's delivery that reached the cluster, taken together."""

    source_sha: str
    deployed_at: datetime | None = None  # first Synced+Healthy at its revision
    failed_at: datetime | None = None  # first deploy failure recorded by its argocd_sync step
    failure: str | None = None  # what failed: a DeployFailure value, or "rolled back"

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def started(self) -> datetime:
        """When it reached the cluster: its deployment, or else the failure of its sync."""
        moment = self.deployed_at or self.failed_at
        assert moment is not None  # a Delivery is only made from one of the two
        return moment


@dataclass(frozen=True)
class History:
    application: str
    deployments: tuple[Deployment, ...]  # oldest first
    deliveries: tuple[Delivery, ...]  # oldest first
    notes: tuple[str, ...] = field(default=())

    @property
    def first(self) -> datetime | None:
        moments = [d.at for d in self.deployments] + [d.started for d in self.deliveries]
        return min(moments) if moments else None


def read_history(instance: dg.DagsterInstance, target: Target, application: str) -> History:
    """Everything the instance recorded about ``target``'s deliveries to ``application`` (``namespace/name``)."""
    deliveries: dict[str, Delivery] = {}
    candidates: list[Deployment] = []
    notes: list[str] = []
    for record in _materializations(instance, target.key("argocd_sync")):
        metadata = _values(record)
        if metadata.get("application", application) != application or not record.partition_key:
            continue
        at = _moment(metadata.get(SYNCED_AT_KEY), record.timestamp)
        sha = record.partition_key
        commits = metadata.get(DEPLOYED_COMMITS_KEY)
        if isinstance(commits, list):
            deployed = tuple(DeployedCommit.from_json(c) for c in commits if isinstance(c, dict))
        else:
            deployed = _source_commit_only(instance, target, sha, at, notes)
        verification = str(metadata.get("verification", "not recorded"))
        candidates.append(Deployment(at, str(metadata.get("revision") or ""), sha, False, verification, deployed))
        delivery = deliveries.setdefault(sha, Delivery(sha))
        delivery.deployed_at = min(filter(None, (delivery.deployed_at, at)))
        if verification == "failed":
            delivery.failure = delivery.failure or "verification failed"
    for sha, failed_at, kind in _deploy_failures(instance, target):
        delivery = deliveries.setdefault(sha, Delivery(sha))
        delivery.failed_at = min(filter(None, (delivery.failed_at, failed_at)))
        delivery.failure = delivery.failure or kind
    for record in _materializations(instance, target.key("rollback_commit")):
        metadata = _values(record)
        if metadata.get("argocd_application", application) != application:
            continue
        rolled_back_from = str(metadata.get("rolled_back_from") or "")
        if rolled_back_from in deliveries:
            deliveries[rolled_back_from].failure = deliveries[rolled_back_from].failure or ROLLED_BACK
        if metadata.get("argocd_health") == "Healthy" and metadata.get("argocd_sync") == "Synced":
            candidates.append(Deployment(_moment(metadata.get(f"argocd_{SYNCED_AT_KEY}"), record.timestamp),
                                         str(metadata.get("argocd_revision") or metadata.get("commit") or ""),
                                         record.partition_key or "", True,
                                         str(metadata.get("verification", "not recorded"))))
    # A rerun, or a delivery that reached a revision an earlier one had reached, deploys nothing new.
    seen: set[str] = set()
    deployments = []
    for deployment in sorted(candidates, key=lambda d: d.at):
        if deployment.revision and deployment.revision in seen:
            continue
        seen.add(deployment.revision)
        deployments.append(deployment)
    return History(application, tuple(deployments), tuple(sorted(deliveries.values(), key=lambda d: d.started)),
                   tuple(notes))


def _materializations(instance: dg.DagsterInstance, asset: dg.AssetKey) -> Iterator[dg.EventLogRecord]:
    cursor, read = None, 0
    while read < MAX_RECORDS:
        page = instance.fetch_materializations(asset, limit=_PAGE, cursor=cursor)
        yield from page.records
        read += len(page.records)
        if not page.has_more:
            return
        cursor = page.cursor


def _deploy_failures(instance: dg.DagsterInstance, target: Target) -> Iterator[tuple[str, datetime, str]]:
    """(source commit, when, what) of each failed delivery run whose argocd_sync step says what failed."""
    runs = instance.get_run_records(dg.RunsFilter(job_name=target.delivery_job,
                                                  statuses=[dg.DagsterRunStatus.FAILURE]), limit=MAX_RECORDS)
    sync_step = target.key("argocd_sync").to_python_identifier()
    for run in runs:
        sha = run.dagster_run.tags.get("dagster/partition")
        if not sha:
            continue
        for record in instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            event = record.dagster_event
            data = event.step_failure_data if event is not None else None
            user = data.user_failure_data if data is not None else None
            kind = user.metadata.get(DEPLOY_FAILURE_KEY) if user is not None else None
            if event is not None and event.step_key == sync_step and kind is not None:
                yield sha, datetime.fromtimestamp(record.timestamp, UTC), str(kind.value)
                break


def _source_commit_only(instance: dg.DagsterInstance, target: Target, sha: str, deployed_at: datetime,
                        notes: list[str]) -> tuple[DeployedCommit, ...]:
    """For a deployment recorded before deployments listed their commits: its source commit alone."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=target.key("source_commit"), asset_partitions=[sha]), limit=1).records
    committed = _values(records[0]).get("committed_at") if records else None
    if committed is None:
        notes.append(f"the delivery of {sha[:12]} recorded neither its commits nor its commit time: not in lead time")
        return ()
    return (DeployedCommit(sha, _moment(committed, deployed_at.timestamp()), ()),)


def _values(record: dg.EventLogRecord) -> dict[str, object]:
    materialization = record.asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization is not None else {}


def _moment(recorded: object, fallback_timestamp: float) -> datetime:
    if isinstance(recorded, str):
        try:
            moment = datetime.fromisoformat(recorded)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(fallback_timestamp, UTC)
