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
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.runbook import NO_CLUSTER, RunbookError, diff_application, read_status, sync_to_head
from coelho_pipeline.targets import Target

__all__ = ["RUNBOOK_TAG", "MetricsConfig", "SyncConfig", "build_runbook_jobs", "pipeline_status"]

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


def build_runbook_jobs(target: Target) -> tuple[dg.JobDefinition, ...]:
    """``runbook_status``, ``runbook_diff``, ``runbook_sync`` and ``runbook_metrics`` of ``target``."""

    def resources(context: dg.OpExecutionContext) -> TargetResources:
        return TargetResources(context.resources, target)

    @dg.op(name=target.name("application_status"), retry_policy=RETRY_POLICY,
           required_resource_keys=required_keys(target, "argocd"),
           out=dg.Out(str, description="The status report, markdown."))
    def application_status(context: dg.OpExecutionContext) -> Iterator[dg.Output[str]]:
        """``argocd app get``: sync, health, revision, last operation, history, per-resource status."""
        yield _status(context, target, resources(context).argocd)

    @dg.op(name=target.name("application_diff"), retry_policy=RETRY_POLICY,
           required_resource_keys=required_keys(target, "argocd", "git", "target"),
           out=dg.Out(str, description="The diff report, markdown."))
    def application_diff(context: dg.OpExecutionContext) -> Iterator[dg.Output[str]]:
        """``argocd app diff``: the chart rendered at the branch head against the live objects.

        Differences are a finding, not a failed run (the metadata ``differences`` counts them).
        """
        res = resources(context)
        yield _diff(context, res.argocd, res.git, res.target)

    @dg.op(name=target.name("application_sync"), retry_policy=RETRY_POLICY,
           required_resource_keys=required_keys(target, "argocd", "git"),
           out=dg.Out(str, description="The sync report, markdown."))
    def application_sync(context: dg.OpExecutionContext, config: SyncConfig) -> Iterator[dg.Output[str]]:
        """``argocd app sync [--force]`` to the branch head, waiting until Synced+Healthy there."""
        res = resources(context)
        yield _sync(context, config, res.argocd, res.git)

    @dg.op(name=target.name("delivery_metrics_report"),
           required_resource_keys=required_keys(target, "argocd", "target"),
           out=dg.Out(str, description="The delivery insight report, markdown."))
    def delivery_metrics_report(context: dg.OpExecutionContext, config: MetricsConfig) -> Iterator[dg.Output[str]]:
        """The ``delivery_metrics`` table for any window, without materializing the asset."""
        res = resources(context)
        yield _metrics(context, config, target, res.argocd, res.target)

    @dg.job(name=target.name("runbook_status"), tags={RUNBOOK_TAG: "status"},
            description="Runbook: the Application's status, history and resources.")
    def runbook_status() -> None:
        application_status()

    @dg.job(name=target.name("runbook_diff"), tags={RUNBOOK_TAG: "diff"},
            description="Runbook: the chart at the branch head against the live objects.")
    def runbook_diff() -> None:
        application_diff()

    @dg.job(name=target.name("runbook_sync"), tags={RUNBOOK_TAG: "sync"},
            description="Runbook: refresh and sync the branch head (config force: hard refresh, replace, force apply).")
    def runbook_sync() -> None:
        application_sync()

    @dg.job(name=target.name("runbook_metrics"), tags={RUNBOOK_TAG: "metrics"},
            description="Runbook: the DORA keys and the rework rate for a window (config since), from the records.")
    def runbook_metrics() -> None:
        delivery_metrics_report()

    return runbook_status, runbook_diff, runbook_sync, runbook_metrics


def _status(context: dg.OpExecutionContext, target: Target, argocd: ArgoCDResource) -> dg.Output[str]:
    with _client(argocd) as client:
        try:
            report = read_status(client)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    st = report.status
    context.log.info(st.describe())
    markdown = report.markdown.rstrip("\n") + "\n\n" + pipeline_status(context.instance, target)
    return dg.Output(markdown, metadata={
        REPORT: dg.MetadataValue.md(markdown),
        "application": report.application, "sync": st.sync_status or "", "health": st.health_status or "",
        "revision": st.revision or "", "operation": st.operation_phase or "",
    })


def pipeline_status(instance: dg.DagsterInstance, target: Target) -> str:
    """What Argo CD does not know: whether deliveries are held, and how the last one verified."""
    hold = current_hold(instance, target)
    latest = instance.fetch_materializations(target.key("argocd_sync"), limit=1).records
    if latest and latest[0].asset_materialization is not None:
        outcome = latest[0].asset_materialization.metadata.get("verification")
        last = f"`{latest[0].partition_key}`, rollout verification {outcome.value if outcome else 'not recorded'}"
    else:
        last = "none yet"
    return ("### Pipeline\n\n| | |\n|---|---|\n"
            f"| deliveries | {hold.describe() if hold is not None and hold.held else 'not held'} |\n"
            f"| last delivery | {last} |\n")


def _diff(context: dg.OpExecutionContext, argocd: ArgoCDResource, git: GitResource,
          target: DeliveryTargetResource) -> dg.Output[str]:
    with _client(argocd) as client:
        try:
            report = diff_application(client, git.remote(), target)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    context.log.info(f"{report.differences} difference(s) between {report.revision} and the cluster")
    return dg.Output(report.markdown, metadata={
        REPORT: dg.MetadataValue.md(report.markdown),
        "application": report.application, "revision": report.revision, "differences": report.differences,
        "in_sync": report.count("in sync"), "differs": report.count("differs"),
        "missing_live": report.count("missing live"), "extra": report.count("extra"),
    })


def _sync(context: dg.OpExecutionContext, config: SyncConfig, argocd: ArgoCDResource,
          git: GitResource) -> dg.Output[str]:
    with _client(argocd) as client:
        try:
            report = sync_to_head(client, git.remote(), force=config.force, timeout=argocd.sync_timeout_seconds,
                                  info={"dagster-run": context.run.run_id,
                                        "runbook": "sync --force" if config.force else "sync"})
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    st = report.result.status
    return dg.Output(report.markdown, metadata={
        REPORT: dg.MetadataValue.md(report.markdown),
        "application": report.application, "revision": report.revision, "force": report.force,
        "sync": st.sync_status or "", "health": st.health_status or "",
        "seconds_to_converge": round(report.result.seconds, 2),
    })


def _metrics(context: dg.OpExecutionContext, config: MetricsConfig, where: Target, argocd: ArgoCDResource,
             target: DeliveryTargetResource) -> dg.Output[str]:
    try:
        since = parse_since(config.since) if config.since else None
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from e
    report = environment_report(context.instance, where, argocd, target, since=since)
    markdown = report.markdown()
    return dg.Output(markdown, metadata={REPORT: dg.MetadataValue.md(markdown), "since": report.since.isoformat(),
                                         "deliveries": report.deliveries, "deployments": report.deployments})
