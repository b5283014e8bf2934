"""The DORA keys and the rework rate of one environment, computed from its delivery history.

Definitions (the README's "Delivery insight" says the same):

* a **delivery** is one source commit's delivery that reached the cluster: it became Synced+Healthy,
  or its sync, health or verification failed. Builds, checks and refused pushes never reach it.
* a **deployment** is a revision of the branch reaching Synced+Healthy for the first time, by a
  delivery or a rollback. A rerun that reaches a revision already reached deploys nothing.
* a delivery **failed** when its sync failed, the Application turned Degraded or never Healthy, its
  rollout verification failed, or a rollback was later made from it. The failure starts when it
  reached the cluster: its deployment, or the failure of its sync when it never deployed.
* a **restore** is the first deployment after a failure's start that is a rollback or the delivery
  of a commit that did not fail, and whose verification did not fail.
* **rework** is a deployment that is a rollback, or the first delivery deployed after a failure.
* **lead time** runs from a commit's time to the first deployment that brought it to production,
  over every human commit a deployment brought, the commits of a burst it superseded included.

A window holds what happened in it: deliveries by when they reached the cluster, deployments,
commits by when they were deployed. It starts no earlier than the first record, so a young
instance is not diluted by the days before it existed. With fewer than two deliveries in it,
every figure is "no data": one delivery is not a rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from coelho_pipeline.insight.history import Delivery, Deployment, History

DEFAULT_WINDOW = timedelta(days=28)
MIN_DELIVERIES = 2
HOUR, DAY = 3600.0, 86400.0
WEEK, MONTH = 7 * DAY, 30 * DAY

# DORA's performance clusters (the 2023 State of DevOps report) as (band, bound): the first band
# whose bound the figure is within. Beyond the last bound is "low".
LEAD_TIME_BANDS = (("elite", DAY), ("high", WEEK), ("medium", MONTH))  # median seconds, below
RECOVERY_BANDS = (("elite", HOUR), ("high", DAY), ("medium", WEEK))  # median seconds, below
CHANGE_FAILURE_BANDS = (("elite", 0.05), ("high", 0.10), ("medium", 0.15))  # ratio, at most
DEPLOYMENT_FREQUENCY_BANDS = (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30))  # per day, at least
NO_DATA = "no data"


@dataclass(frozen=True)
class Figure:
    key: str  # the metadata key of its value
    label: str
    value: float | None  # None: no data
    text: str  # the value as shown, e.g. "42 min", or "no data"
    detail: str  # what it was computed from, or why there is no data
    band: str = ""  # elite / high / medium / low; empty where DORA gives no band or there is no data


@dataclass(frozen=True)
class AppFigures:
    app: str
    commits: int
    lead_time_median: float | None  # seconds
    lead_time_p90: float | None
    deployments: int


@dataclass(frozen=True)
class Series:
    """The points the plots draw, all inside the window."""

    lead_times: tuple[tuple[datetime, float], ...]  # (deployed at, seconds) per commit
    deployments: tuple[Deployment, ...]
    deliveries: tuple[Delivery, ...]
    recoveries: tuple[tuple[datetime, float], ...]  # (failure start, seconds to restore)


@dataclass(frozen=True)
class Report:
    application: str
    since: datetime
    until: datetime
    deliveries: int
    deployments: int
    figures: tuple[Figure, ...]
    apps: tuple[AppFigures, ...]
    series: Series
    notes: tuple[str, ...] = ()

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)

    def markdown(self) -> str:
        lines = [f"### Delivery insight: {self.application}", "",
                 f"{_day(self.since)} to {_day(self.until)} ({_duration((self.until - self.since).total_seconds())}): "
                 f"{self.deliveries} deliveries, {self.deployments} deployments.", "",
                 "| figure | value | DORA band | from |", "|---|---|---|---|"]
        lines += [f"| {f.label} | {f.text} | {f.band or '-'} | {f.detail} |" for f in self.figures]
        if self.apps:
            lines += ["", "| app | commits deployed | lead time, median | p90 | deployments |", "|---|---|---|---|---|"]
            lines += [f"| {a.app} | {a.commits} | {_maybe(a.lead_time_median)} | {_maybe(a.lead_time_p90)} | "
                      f"{a.deployments} |" for a in self.apps]
        lines += [f"\n_{n}_" for n in self.notes]
        return "\n".join(lines) + "\n"


def compute(history: History, *, apps: Sequence[str] = (), since: datetime | None = None,
            until: datetime | None = None) -> Report:
    """The figures of ``history`` between ``since`` (default: 28 days before ``until``) and ``until`` (now)."""
    until = until or datetime.now(UTC)
    since = since or until - DEFAULT_WINDOW
    if history.first is not None and history.first > since:
        since = history.first
    since = min(since, until)

    def inside(moment: datetime) -> bool:
        return since <= moment <= until

    deliveries = [d for d in history.deliveries if inside(d.started)]
    deployments = [d for d in history.deployments if inside(d.at)]
    commits = _first_deployed(history.deployments)
    window_commits = [(c, at) for c, at in commits if inside(at)]
    lead = [(at, max(0.0, (at - c.committed_at).total_seconds())) for c, at in window_commits]
    recoveries = _recoveries(history, deliveries)
    series = Series(tuple(lead), tuple(deployments), tuple(deliveries), tuple(recoveries))
    days = (until - since).total_seconds() / DAY
    if len(deliveries) < MIN_DELIVERIES:
        why = (f"{len(deliveries)} deliver{'y' if len(deliveries) == 1 else 'ies'} in the window; at least "
               f"{MIN_DELIVERIES} are needed")
        figures = tuple(Figure(key, label, None, NO_DATA, why) for key, label in _LABELS.items())
        return Report(history.application, since, until, len(deliveries), len(deployments), figures, (), series,
                      history.notes)
    figures = (
        *_lead_time(lead),
        *_frequency(deployments, days),
        _change_failure_rate(deliveries),
        _recovery_time(recoveries, deliveries),
        _rework_rate(deployments, history),
    )
    per_app = tuple(_app_figures(app, window_commits, deployments) for app in apps)
    return Report(history.application, since, until, len(deliveries), len(deployments), figures, per_app, series,
                  history.notes)


_LABELS = {
    "lead_time_median_hours": "lead time for changes, median",
    "lead_time_p90_hours": "lead time for changes, p90",
    "deployments_per_day": "deployment frequency",
    "deployment_days_per_week": "deployment days per week",
    "change_failure_rate": "change failure rate",
    "recovery_time_median_hours": "failed-deployment recovery time, median",
    "rework_rate": "rework rate",
}


def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"since {text!r} is not a date: give YYYY-MM-DD or an ISO 8601 time "
                         "(2026-11-01T08:00:00+00:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def band(value: float, bands: Sequence[tuple[str, float]], *, higher_is_better: bool = False,
         inclusive: bool = False) -> str:
    """The first band whose bound ``value`` is within; "low" beyond them all."""
    for name, bound in bands:
        if (value >= bound) if higher_is_better else (value <= bound if inclusive else value < bound):
            return name
    return "low"


def p90(values: Sequence[float]) -> float:
    """The 90th percentile, interpolated between the closest ranks (the value itself for one)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=10, method="inclusive")[8]


def _first_deployed(deployments: Sequence[Deployment]) -> list[tuple]:
    """(commit, first deployed at) for every commit any deployment brought, oldest deployment first."""
    seen: dict[str, tuple] = {}
    for deployment in deployments:
        for commit in deployment.commits:
            seen.setdefault(commit.sha, (commit, deployment.at))
    return list(seen.values())


def _lead_time(lead: Sequence[tuple[datetime, float]]) -> tuple[Figure, Figure]:
    labels = _LABELS["lead_time_median_hours"], _LABELS["lead_time_p90_hours"]
    if not lead:
        why = "no commit was deployed in the window"
        return (Figure("lead_time_median_hours", labels[0], None, NO_DATA, why),
                Figure("lead_time_p90_hours", labels[1], None, NO_DATA, why))
    seconds = [s for _, s in lead]
    median, high = statistics.median(seconds), p90(seconds)
    detail = f"{len(seconds)} commit{'s' if len(seconds) != 1 else ''}, commit time to Synced+Healthy"
    return (Figure("lead_time_median_hours", labels[0], median / HOUR, _duration(median), detail,
                   band(median, LEAD_TIME_BANDS)),
            Figure("lead_time_p90_hours", labels[1], high / HOUR, _duration(high), detail))


def _frequency(deployments: Sequence[Deployment], days: float) -> tuple[Figure, Figure]:
    # A window shorter than a day (or a week) counts as one: a burst is not a rate of thousands a day.
    per_day = len(deployments) / max(days, 1.0)
    deployment_days = len({d.at.date() for d in deployments})
    weeks = max(days / 7, 1.0)
    detail = f"{len(deployments)} deployments over {_duration(days * DAY)}"
    return (Figure("deployments_per_day", _LABELS["deployments_per_day"], per_day, f"{per_day:.2f} / day", detail,
                   band(per_day, DEPLOYMENT_FREQUENCY_BANDS, higher_is_better=True)),
            Figure("deployment_days_per_week", _LABELS["deployment_days_per_week"], deployment_days / weeks,
                   f"{deployment_days / weeks:.1f}", f"{deployment_days} day(s) with a deployment (UTC)"))


def _change_failure_rate(deliveries: Sequence[Delivery]) -> Figure:
    failed = [d for d in deliveries if d.failed]
    rate = len(failed) / len(deliveries)
    kinds = ", ".join(f"{k} {sum(1 for d in failed if d.failure == k)}" for k in sorted({d.failure for d in failed}))
    return Figure("change_failure_rate", _LABELS["change_failure_rate"], rate, _percent(rate),
                  f"{len(failed)} of {len(deliveries)} deliveries failed" + (f" ({kinds})" if kinds else ""),
                  band(rate, CHANGE_FAILURE_BANDS, inclusive=True))


def _recoveries(history: History, deliveries: Sequence[Delivery]) -> list[tuple[datetime, float]]:
    failed_shas = {d.source_sha for d in history.deliveries if d.failed}
    restores = [d for d in history.deployments
                if d.verification != "failed" and (d.rollback or d.source_sha not in failed_shas)]
    out = []
    for delivery in deliveries:
        if not delivery.failed:
            continue
        restore = next((r for r in restores if r.at > delivery.started), None)
        if restore is not None:
            out.append((delivery.started, (restore.at - delivery.started).total_seconds()))
    return out


def _recovery_time(recoveries: Sequence[tuple[datetime, float]], deliveries: Sequence[Delivery]) -> Figure:
    label = _LABELS["recovery_time_median_hours"]
    failed = sum(1 for d in deliveries if d.failed)
    open_ = failed - len(recoveries)
    pending = f"; {open_} not restored yet" if open_ else ""
    if not recoveries:
        why = "no failed delivery in the window" if not failed else f"{failed} failed, none restored yet"
        return Figure("recovery_time_median_hours", label, None, NO_DATA, why)
    median = statistics.median(s for _, s in recoveries)
    return Figure("recovery_time_median_hours", label, median / HOUR, _duration(median),
                  f"{len(recoveries)} failure(s) to the next restore{pending}", band(median, RECOVERY_BANDS))


def _rework_rate(deployments: Sequence[Deployment], history: History) -> Figure:
    label = _LABELS["rework_rate"]
    if not deployments:
        return Figure("rework_rate", label, None, NO_DATA, "no deployment in the window")
    rework = {d for d in deployments if d.rollback}
    forward = [d for d in history.deployments if not d.rollback]
    for delivery in history.deliveries:
        if delivery.failed:
            fix = next((d for d in forward if d.at > delivery.started), None)
            if fix is not None:
                rework.add(fix)
    counted = sum(1 for d in deployments if d in rework)
    rollbacks = sum(1 for d in deployments if d.rollback)
    return Figure("rework_rate", label, counted / len(deployments), _percent(counted / len(deployments)),
                  f"{counted} of {len(deployments)} deployments: {rollbacks} rollback(s), "
                  f"{counted - rollbacks} fix(es) after a failure")


def _app_figures(app: str, commits: Sequence[tuple], deployments: Sequence[Deployment]) -> AppFigures:
    lead = [max(0.0, (at - c.committed_at).total_seconds()) for c, at in commits if app in c.apps]
    touched = sum(1 for d in deployments if any(app in c.apps for c in d.commits))
    return AppFigures(app, len(lead), statistics.median(lead) if lead else None, p90(lead) if lead else None,
                      touched)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * HOUR:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} d"


def _percent(ratio: float) -> str:
    # One decimal: 15.4 % is "low" while 15 % is "medium"; a rounded figure would hide why.
    return f"{ratio:.1%}"


def _maybe(seconds: float | None) -> str:
    return NO_DATA if seconds is None else _duration(seconds)


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
