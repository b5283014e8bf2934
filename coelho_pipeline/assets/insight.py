"""Delivery insight: the DORA keys and the rework rate of this environment, from the instance's own
records (coelho_pipeline.insight), materialized weekly with a plot over time."""


import base64
from datetime import UTC, datetime

import dagster as dg

from coelho_pipeline.insight.dora import Report, compute
from coelho_pipeline.insight.history import read_history
from coelho_pipeline.insight.plot import plot_png
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.targets import Target

INSIGHT_GROUP = "insight"


def build_delivery_metrics(target: Target) -> dg.AssetsDefinition:
    @dg.asset(key=target.key("delivery_metrics"), group_name=target.name(INSIGHT_GROUP), kinds={"python"},
              deps=[target.key("argocd_sync"), target.key("rollback_commit")],
              required_resource_keys=required_keys(target, "argocd", "target"))
    def delivery_metrics(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Lead time for changes, deployment frequency, change failure rate, failed-deployment recovery
        time and rework rate over the last 28 days, with their DORA bands, per app where it applies.

        Each figure with data is also a number in the metadata, so the UI plots it across weeks; the
        plot shows the window's deliveries over time.
        """
        res = TargetResources(context.resources, target)
        return _delivery_metrics(context, environment_report(context.instance, target, res.argocd, res.target))

    return delivery_metrics


def _delivery_metrics(context: dg.AssetExecutionContext, report: Report) -> dg.MaterializeResult:
    context.log.info(f"{report.deliveries} deliveries and {report.deployments} deployments of "
                     f"{report.application} between {report.since:%Y-%m-%d} and {report.until:%Y-%m-%d}")
    png = plot_png(report)
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report.markdown()),
        "plot": dg.MetadataValue.md(f"![delivery insight](data:image/png;base64,{base64.b64encode(png).decode()})"),
        "since": report.since.isoformat(),
        "deliveries": report.deliveries,
        "deployments": report.deployments,
        **{f.key: dg.MetadataValue.float(round(f.value, 4)) for f in report.figures if f.value is not None},
        "dora_bands": ", ".join(f"{f.label}: {f.band}" for f in report.figures if f.band) or "no data",
    })


def environment_report(instance: dg.DagsterInstance, where: Target, argocd: ArgoCDResource,
                       target: DeliveryTargetResource, *, since: datetime | None = None,
                       until: datetime | None = None) -> Report:
    """The report of the Application ``where`` delivers to."""
    application = f"{argocd.namespace}/{argocd.app_name}"
    return compute(read_history(instance, where, application), apps=[a.name for a in target.catalog()],
                   since=since, until=until or datetime.now(UTC))
