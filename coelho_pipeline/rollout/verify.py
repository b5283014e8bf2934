"""The rollout verification: the policy (what passes, fails or cannot be judged) and its clock.

After Argo CD reports Synced and Healthy, a delivery is verified in two phases:

1. **Rollout.** Every Deployment the Application manages is at its new generation
   (``observedGeneration``), with every wanted replica updated and available, within
   ``rollout_timeout``. ``ProgressDeadlineExceeded`` fails at once.
2. **Soak.** For ``soak_seconds``, every ``interval_seconds``: container restarts of those
   Deployments' Pods must not increase, and each metric check's PromQL must stay within its
   bounds in every sample. A query with no series or only NaN in every sample is *inconclusive*
   (said so, never counted as a pass); a transient read error skips that one sample.

The judge is pure: readers, clock and sleeper are injected, so the policy is tested on fake time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from coelho_pipeline.errors import PipelineError, is_transient
from coelho_pipeline.rollout.prometheus import QueryResult
from coelho_pipeline.rollout.workloads import ContainerRestarts, DeploymentState


class Outcome(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class VerifyConfigError(PipelineError):
    """A metric check is malformed; the message names the variable and the entry."""


@dataclass(frozen=True)
class MetricCheck:
    """A PromQL query whose every series must stay within ``[min, max]`` (either bound optional)."""

    name: str
    query: str
    min: float | None = None
    max: float | None = None

    def violation(self, value: float) -> str | None:
        if self.max is not None and value > self.max:
            return f"above max {self.max:g}"
        if self.min is not None and value < self.min:
            return f"below min {self.min:g}"
        return None

    def bounds(self) -> str:
        return " and ".join(b for b in (f">= {self.min:g}" if self.min is not None else "",
                                         f"<= {self.max:g}" if self.max is not None else "") if b)


@dataclass(frozen=True)
class VerifyPolicy:
    rollout_timeout: float = 300.0
    soak_seconds: float = 60.0
    interval_seconds: float = 10.0
    checks: tuple[MetricCheck, ...] = ()


@dataclass(frozen=True)
class Finding:
    outcome: Outcome
    subject: str  # a Deployment, "restarts" or a metric check's name
    message: str


@dataclass
class RolloutReport:
    outcome: Outcome
    findings: list[Finding]
    deployments: tuple[DeploymentState, ...]
    samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        failed = [f.message for f in self.findings if f.outcome is not Outcome.PASSED]
        if self.outcome is Outcome.PASSED:
            return (f"rollout verified: {len(self.deployments)} Deployment(s) at their new generation, no restarts "
                    f"and every metric check within bounds over {len(self.samples)} sample(s)")
        return f"rollout {self.outcome.value}: " + "; ".join(failed)


class WorkloadSource(Protocol):
    """Reads of every Deployment at once (rollout.workloads.WorkloadReader); an error fails the whole read."""

    def deployments(self, refs: Sequence[tuple[str, str]]) -> tuple[DeploymentState, ...]: ...
    def container_restarts(self, deployments: Sequence[DeploymentState]) -> dict[str, tuple[ContainerRestarts, ...]]: ...


class MetricSource(Protocol):
    def query(self, promql: str) -> QueryResult: ...


def parse_metric_checks(data: object, *, source: str = "COELHO_VERIFY_QUERIES") -> tuple[MetricCheck, ...]:
    """Checks from a YAML/JSON list: ``[{name, query, min?, max?}]``. Errors name ``source[i].key``."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise VerifyConfigError(f"{source} must be a list of {{name, query, min, max}} entries, "
                                f"not {type(data).__name__}")
    checks, names = [], set()
    for i, entry in enumerate(data):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise VerifyConfigError(f"{where} must be a mapping with name, query and min and/or max")
        unknown = sorted(set(entry) - {"name", "query", "min", "max"})
        if unknown:
            raise VerifyConfigError(f"{where} has unknown key(s) {', '.join(unknown)} (expected name, query, min, max)")
        name, query = entry.get("name"), entry.get("query")
        if not isinstance(name, str) or not name.strip():
            raise VerifyConfigError(f"{where}.name must be a non-empty string")
        if name in names:
            raise VerifyConfigError(f"{where}.name {name!r} is used twice")
        if not isinstance(query, str) or not query.strip():
            raise VerifyConfigError(f"{where}.query must be a non-empty PromQL string")
        bounds = {}
        for key in ("min", "max"):
            value = entry.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise VerifyConfigError(f"{where}.{key} must be a finite number, not {value!r}")
            bounds[key] = float(value)
        if not bounds:
            raise VerifyConfigError(f"{where} ({name}) needs min and/or max: a query without a bound checks nothing")
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise VerifyConfigError(f"{where} ({name}): min {bounds['min']:g} is above max {bounds['max']:g}")
        names.add(name)
        checks.append(MetricCheck(name=name, query=query.strip(), **bounds))
    return tuple(checks)


def verify_rollout(
    workloads: WorkloadSource,
    metrics: MetricSource | None,
    deployments: Sequence[tuple[str, str]],
    policy: VerifyPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _message: None,
) -> RolloutReport:
    """Waits for the rollout of ``deployments`` (namespace, name), then soaks; the report says why."""
    started = clock()
    findings: list[Finding] = []
    if not deployments:
        findings.append(Finding(Outcome.INCONCLUSIVE, "deployments",
                                "the Application manages no Deployment: nothing to verify"))
        return RolloutReport(Outcome.INCONCLUSIVE, findings, (), seconds=0.0)
    if policy.checks and metrics is None:
        raise VerifyConfigError("metric checks are configured (COELHO_VERIFY_QUERIES) but COELHO_PROMETHEUS_URL "
                                "is not set")

    states, problems = _wait_for_rollout(workloads, deployments, policy, clock=clock, sleep=sleep, log=log)
    if problems:
        findings.extend(Finding(Outcome.FAILED, subject, message) for subject, message in problems)
        return RolloutReport(Outcome.FAILED, findings, states, seconds=clock() - started)
    log(f"{len(states)} Deployment(s) rolled out; soaking {policy.soak_seconds:g}s")

    # Restarts are counted from here; a transient error defers a Deployment's baseline to its next read.
    baseline: dict[str, dict[str, int] | None] = _restarts_or_none(workloads, states, log)
    samples: list[dict[str, Any]] = []
    soak_start = clock()
    while True:
        samples.append(_sample(workloads, metrics, states, baseline, policy, offset=clock() - soak_start, log=log))
        remaining = policy.soak_seconds - (clock() - soak_start)
        if remaining <= 0:
            break
        sleep(min(policy.interval_seconds, remaining))

    try:
        final = workloads.deployments([(s.namespace, s.name) for s in states])
    except Exception as e:  # noqa: BLE001 - a transient error leaves this last read unjudged, said so
        if not is_transient(e):
            raise
        findings.extend(Finding(Outcome.INCONCLUSIVE, s.ref, f"{s.ref} not read after the soak: {e}") for s in states)
        final = ()
    for state, now in zip(states, final):
        if now.generation != state.generation:
            # Scaled or edited during the soak (an autoscaler, a human): a new rollout, not this one's regression.
            findings.append(Finding(Outcome.PASSED, state.ref, f"{state.ref} changed during the soak (generation "
                                                               f"{state.generation} → {now.generation}); not judged"))
        elif now.problem():
            findings.append(Finding(Outcome.FAILED, state.ref, f"after the soak: {now.problem()}"))
    findings.extend(_judge_restarts(samples))
    findings.extend(_judge_metric(check, samples) for check in policy.checks)
    outcome = (Outcome.FAILED if any(f.outcome is Outcome.FAILED for f in findings)
               else Outcome.INCONCLUSIVE if any(f.outcome is Outcome.INCONCLUSIVE for f in findings)
               else Outcome.PASSED)
    return RolloutReport(outcome, findings, tuple(final or states), samples, seconds=clock() - started)


def _wait_for_rollout(
    workloads: WorkloadSource, deployments: Sequence[tuple[str, str]], policy: VerifyPolicy, *,
    clock: Callable[[], float], sleep: Callable[[float], None], log: Callable[[str], None],
) -> tuple[tuple[DeploymentState, ...], list[tuple[str, str]]]:
    """The Deployments once rolled out, or the problems left when the rollout gave up or time ran out."""
    deadline = clock() + policy.rollout_timeout
    poll = max(min(policy.interval_seconds, 2.0), 0.05)
    states: tuple[DeploymentState, ...] = ()
    while True:
        try:
            states = workloads.deployments(deployments)
        except Exception as e:  # noqa: BLE001 - a transient error is retried until the deadline
            if not is_transient(e) or clock() >= deadline:
                raise
            log(f"waiting for the rollout: {e}")
            sleep(min(poll, max(deadline - clock(), 0.0)))
            continue
        stuck = [(s.ref, s.problem() or "") for s in states if s.gave_up]
        if stuck:
            return states, stuck
        waiting = [(s.ref, s.problem() or "") for s in states if s.problem()]
        if not waiting:
            return states, []
        if clock() >= deadline:
            return states, [(ref, f"not rolled out within {policy.rollout_timeout:g}s: {why}") for ref, why in waiting]
        log(f"waiting for the rollout: {waiting[0][1]}")
        sleep(min(poll, max(deadline - clock(), 0.0)))


def _restarts_or_none(workloads: WorkloadSource, states: Sequence[DeploymentState],
                      log: Callable[[str], None]) -> dict[str, dict[str, int] | None]:
    try:
        read = workloads.container_restarts(states)
    except Exception as e:  # noqa: BLE001 - transient: the next read becomes the baseline
        if not is_transient(e):
            raise
        log(f"restarts not read yet ({e})")
        return {s.ref: None for s in states}
    return {s.ref: {c.ref: c.restarts for c in read.get(s.ref, ())} for s in states}


def _sample(workloads: WorkloadSource, metrics: MetricSource | None, states: Sequence[DeploymentState],
            baseline: dict[str, dict[str, int] | None], policy: VerifyPolicy, *, offset: float,
            log: Callable[[str], None]) -> dict[str, Any]:
    sample: dict[str, Any] = {"t": round(offset, 2), "restarts": {}, "metrics": {}}
    read: dict[str, tuple[ContainerRestarts, ...]] | None = None
    try:
        read = workloads.container_restarts(states)
    except Exception as e:  # noqa: BLE001 - one lost sample is not a verdict; a terminal error is
        if not is_transient(e):
            raise
        log(f"sample at +{offset:.1f}s: restarts not read ({e})")
        lost = str(e)
    for state in states:
        if read is None:
            sample["restarts"][state.ref] = {"error": lost}
            continue
        now = read.get(state.ref, ())
        before = baseline.get(state.ref)
        if before is None:  # the first read that worked is the baseline
            baseline[state.ref] = before = {c.ref: c.restarts for c in now}
        sample["restarts"][state.ref] = {c.ref: c.restarts - before.get(c.ref, 0)
                                         for c in now if c.restarts - before.get(c.ref, 0) > 0}
    for check in policy.checks:
        assert metrics is not None
        try:
            result = metrics.query(check.query)
        except Exception as e:  # noqa: BLE001 - as above: a transient error loses one sample only
            if not is_transient(e):
                raise
            log(f"sample at +{offset:.1f}s: {check.name} not read ({e})")
            sample["metrics"][check.name] = {"error": str(e)}
            continue
        empty = result.empty_reason
        sample["metrics"][check.name] = ({"empty": empty} if empty else
                                         {s.labels or "value": s.value for s in result.numbers})
    return sample


def _judge_restarts(samples: Sequence[Mapping[str, Any]]) -> list[Finding]:
    worst: dict[str, int] = {}
    for sample in samples:
        for containers in sample["restarts"].values():
            for ref, increase in containers.items():
                if isinstance(increase, int):
                    worst[ref] = max(worst.get(ref, 0), increase)
    if not worst:
        return [Finding(Outcome.PASSED, "restarts", "no container restarted during the soak")]
    listed = ", ".join(f"{ref} +{n}" for ref, n in sorted(worst.items()))
    return [Finding(Outcome.FAILED, "restarts", f"container restarts increased during the soak: {listed}")]


def _judge_metric(check: MetricCheck, samples: Sequence[Mapping[str, Any]]) -> Finding:
    judged = 0
    for sample in samples:
        values = sample["metrics"].get(check.name) or {}
        if "empty" in values or "error" in values:
            continue
        judged += 1
        for labels, value in values.items():
            broken = check.violation(value)
            if broken:
                return Finding(Outcome.FAILED, check.name, f"{check.name}: {check.query} = {value:g} on {labels} at "
                                                           f"+{sample['t']:g}s, {broken}")
    if judged == 0:
        reasons = sorted({str(v) for s in samples for k, v in (s["metrics"].get(check.name) or {}).items()
                          if k in ("empty", "error")})
        return Finding(Outcome.INCONCLUSIVE, check.name,
                       f"{check.name}: inconclusive, {check.query} gave no number in any of {len(samples)} "
                       f"sample(s) ({'; '.join(reasons) or 'no data'})")
    skipped = len(samples) - judged
    note = f" ({skipped} sample(s) without data)" if skipped else ""
    return Finding(Outcome.PASSED, check.name, f"{check.name}: {check.bounds()} in {judged} sample(s){note}")
