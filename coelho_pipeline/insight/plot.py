"""The report's figures over time, as one PNG (matplotlib, imported here only: the code location
and every delivery run load without it)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from coelho_pipeline.insight.dora import DAY, HOUR, Report
from coelho_pipeline.insight.history import Deployment


def plot_png(report: Report) -> bytes:
    """Four panels over the report's window: lead time per commit, deployments as they accumulate
    (rollbacks and failed deliveries marked), the change failure rate so far, and recovery times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series = report.series
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, layout="constrained")
    lead_ax, deploy_ax, failure_ax, recovery_ax = axes.flat
    fig.suptitle(f"Delivery insight: {report.application}, {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}")

    scale, unit = _unit([s for _, s in series.lead_times])
    if series.lead_times:
        lead_ax.scatter([at for at, _ in series.lead_times], [s / scale for _, s in series.lead_times], s=14)
        lead_ax.set_ylim(bottom=0)
    _titled(lead_ax, f"lead time for changes ({unit}, per commit)", bool(series.lead_times))

    # Cumulative, not per-day bars: the same panel reads for a window of minutes or of months.
    deployments = sorted(series.deployments, key=lambda d: d.at)
    if deployments:
        deploy_ax.step([d.at for d in deployments], range(1, len(deployments) + 1), where="post",
                       label="deployments")
        count = {d.at: n for n, d in enumerate(deployments, start=1)}
        rollbacks = [d.at for d in deployments if d.rollback]
        deploy_ax.plot(rollbacks, [count[at] for at in rollbacks], "^", color="tab:orange", label="rollbacks")
        failures = [d.started for d in series.deliveries if d.failed]
        deploy_ax.plot(failures, [_count_before(deployments, at) for at in failures], "x", color="tab:red",
                       label="failed deliveries")
        deploy_ax.legend(loc="upper left", fontsize="small")
    _titled(deploy_ax, "deployments so far", bool(deployments))

    ordered = sorted(series.deliveries, key=lambda d: d.started)
    if ordered:
        failed = 0
        rates = []
        for n, delivery in enumerate(ordered, start=1):
            failed += delivery.failed
            rates.append(100 * failed / n)
        failure_ax.step([d.started for d in ordered], rates, where="post")
        failure_ax.set_ylim(0, 100)
    _titled(failure_ax, "change failure rate so far (%)", bool(ordered))

    scale, unit = _unit([s for _, s in series.recoveries])
    if series.recoveries:
        recovery_ax.scatter([at for at, _ in series.recoveries], [s / scale for _, s in series.recoveries],
                            s=20, color="tab:red")
        recovery_ax.set_ylim(bottom=0)
    _titled(recovery_ax, f"failed-deployment recovery time ({unit})", bool(series.recoveries))

    for ax in axes.flat:
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.set_xlim(report.since, report.until)
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _titled(ax, title: str, has_data: bool) -> None:  # noqa: ANN001 - a matplotlib Axes
    ax.set_title(title, fontsize="medium")
    if not has_data:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")


def _unit(seconds: Sequence[float]) -> tuple[float, str]:
    """The unit that keeps the largest value readable: seconds, minutes, hours or days."""
    largest = max(seconds, default=0.0)
    for scale, unit in ((DAY, "days"), (HOUR, "hours"), (60.0, "minutes")):
        if largest >= 2 * scale:
            return scale, unit
    return 1.0, "seconds"


def _count_before(deployments: Sequence[Deployment], moment: datetime) -> int:
    return sum(1 for d in deployments if d.at <= moment)
