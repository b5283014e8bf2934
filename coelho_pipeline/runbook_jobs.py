"""The runbook as Dagster jobs: ``runbook_status``, ``runbook_diff``, ``runbook_sync`` (config ``force``),
``runbook_metrics`` (config ``since``).

Each job is one op whose output carries the report as markdown metadata (``report``), which the
UI shows on the run and the ``coelho`` console script prints. None of them writes to Git, so they
do not take the single-writer tag; a sync waits for any operation already running in Argo CD.
"""


from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.argocd import ArgoCDClient, ArgoCDError
from coelho_pipeline.assets.insight import environment_report
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.hold import current_hold
from coelho_pipeline.insight.dora import parse_since
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.runbook import NO_CLUSTER, RunbookError, diff_application, read_status, sync_to_head

__all__ = ["RUNBOOK_JOBS", "RUNBOOK_TAG", "MetricsConfig", "SyncConfig", "runbook_diff", "runbook_metrics",
           "runbook_status", "runbook_sync"]

# Every runbook run carries this tag (value = the command), to find them on the Runs page.
RUNBOOK_TAG = "coelho/runbook"
REPORT = "report"  # the output metadata key holding the markdown


class SyncConfig(dg.Config):
    force: bool = False
    """Hard refresh, then sync with Replace=true and apply --force, as ``argocd app sync --force``."""


class MetricsConfig(dg.Config):
    since: str | None = None
    """Start of the window: ``YYYY-MM-DD`` (UTC) or an ISO 8601 time; default 28 days ago."""


def _client(argocd: ArgoCDResource) -> ArgoCDClient:
    try:
        client = argocd.client()
    except ArgoCDError as e:
        raise failure(e) from e
    if client is None:
        raise failure(RunbookError(NO_CLUSTER))
    return client


@dg.op(retry_policy=RETRY_POLICY, out=dg.Out(str, description="The status report, markdown."))
def application_status(context: dg.OpExecutionContext, argocd: ArgoCDResource) -> Iterator[dg.Output[str]]:
    """``argocd app get``: sync, health, revision, last operation, history, per-resource status."""
    with _client(argocd) as client:
        try:
            report = read_status(client)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    st = report.status
    context.log.info(st.describe())
    markdown = report.markdown.rstrip("\n") + "\n\n" + pipeline_status(context.instance)
    yield dg.Output(markdown, metadata={
        REPORT: dg.MetadataValue.md(markdown),
        "application": report.application, "sync": st.sync_status or "", "health": st.health_status or "",
        "revision": st.revision or "", "operation": st.operation_phase or "",
    })


def pipeline_status(instance: dg.DagsterInstance) -> str:
    """What Argo CD does not know: whether deliveries are held, and how the last one verified."""
    hold = current_hold(instance)
    latest = instance.fetch_materializations(dg.AssetKey("argocd_sync"), limit=1).records
    if latest and latest[0].asset_materialization is not None:
        outcome = latest[0].asset_materialization.metadata.get("verification")
        last = f"`{latest[0].partition_key}`, rollout verification {outcome.value if outcome else 'not recorded'}"
    else:
        last = "none yet"
    return ("### Pipeline\n\n| | |\n|---|---|\n"
            f"| deliveries | {hold.describe() if hold is not None and hold.held else 'not held'} |\n"
            f"| last delivery | {last} |\n")


@dg.op(retry_policy=RETRY_POLICY, out=dg.Out(str, description="The diff report, markdown."))
def application_diff(context: dg.OpExecutionContext, argocd: ArgoCDResource, git: GitResource,
                     target: DeliveryTargetResource) -> Iterator[dg.Output[str]]:
    """``argocd app diff``: the chart rendered at the branch head against the live objects.

    Differences are a finding, not a failed run (the metadata ``differences`` counts them).
    """
    with _client(argocd) as client:
        try:
            report = diff_application(client, git.remote(), target)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    context.log.info(f"{report.differences} difference(s) between {report.revision} and the cluster")
    yield dg.Output(report.markdown, metadata={
        REPORT: dg.MetadataValue.md(report.markdown),
        "application": report.application, "revision": report.revision, "differences": report.differences,
        "in_sync": report.count("in sync"), "differs": report.count("differs"),
        "missing_live": report.count("missing live"), "extra": report.count("extra"),
    })


@dg.op(retry_policy=RETRY_POLICY, out=dg.Out(str, description="The sync report, markdown."))
def application_sync(context: dg.OpExecutionContext, config: SyncConfig, argocd: ArgoCDResource,
                     git: GitResource) -> Iterator[dg.Output[str]]:
    """``argocd app sync [--force]`` to the branch head, waiting until Synced+Healthy there."""
    with _client(argocd) as client:
        try:
            report = sync_to_head(client, git.remote(), force=config.force, timeout=argocd.sync_timeout_seconds,
                                  info={"dagster-run": context.run.run_id,
                                        "runbook": "sync --force" if config.force else "sync"})
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    st = report.result.status
    yield dg.Output(report.markdown, metadata={
        REPORT: dg.MetadataValue.md(report.markdown),
        "application": report.application, "revision": report.revision, "force": report.force,
        "sync": st.sync_status or "", "health": st.health_status or "",
        "seconds_to_converge": round(report.result.seconds, 2),
    })


@dg.op(out=dg.Out(str, description="The delivery insight report, markdown."))
def delivery_metrics_report(context: dg.OpExecutionContext, config: MetricsConfig, argocd: ArgoCDResource,
                            target: DeliveryTargetResource) -> Iterator[dg.Output[str]]:
    """The ``delivery_metrics`` table for any window, without materializing the asset."""
    try:
        since = parse_since(config.since) if config.since else None
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from e
    report = environment_report(context.instance, argocd, target, since=since)
    markdown = report.markdown()
    yield dg.Output(markdown, metadata={REPORT: dg.MetadataValue.md(markdown), "since": report.since.isoformat(),
                                        "deliveries": report.deliveries, "deployments": report.deployments})


@dg.job(tags={RUNBOOK_TAG: "status"}, description="Runbook: the Application's status, history and resources.")
def runbook_status() -> None:
    application_status()


@dg.job(tags={RUNBOOK_TAG: "diff"}, description="Runbook: the chart at the branch head against the live objects.")
def runbook_diff() -> None:
    application_diff()


@dg.job(tags={RUNBOOK_TAG: "sync"},
        description="Runbook: refresh and sync the branch head (config force: hard refresh, replace, force apply).")
def runbook_sync() -> None:
    application_sync()


@dg.job(tags={RUNBOOK_TAG: "metrics"},
        description="Runbook: the DORA keys and the rework rate for a window (config since), from the records.")
def runbook_metrics() -> None:
    delivery_metrics_report()


RUNBOOK_JOBS = (runbook_status, runbook_diff, runbook_sync, runbook_metrics)
