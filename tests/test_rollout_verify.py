"""The rollout verification policy on fake time, with in-memory workloads and metrics (the real
Kubernetes API and Prometheus are in test_delivery_verification.py and test_prometheus_queries.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from coelho_pipeline.rollout.prometheus import PrometheusError, QueryResult, Series
from coelho_pipeline.rollout.verify import MetricCheck, Outcome, VerifyConfigError, VerifyPolicy, verify_rollout
from coelho_pipeline.rollout.workloads import ContainerRestarts, DeploymentState, WorkloadError

DONE = DeploymentState("ns", "api", generation=3, observed_generation=3, replicas=2, updated=2, current=2,
                       available=2, ready=2, selector={"app": "api"}, progress_deadline_exceeded=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeWorkloads:
    """Deployment states by time: ``timeline`` is [(from_time, state)]; restarts grow ``per_second``."""

    def __init__(self, clock: FakeClock, timeline: list[tuple[float, DeploymentState]], *,
                 restarts_per_second: float = 0.0, failing_reads: frozenset[int] = frozenset()) -> None:
        self.clock, self.timeline, self.rate = clock, timeline, restarts_per_second
        self.failing_reads, self.reads = failing_reads, 0

    def deployments(self, refs):
        return tuple(self.deployment(namespace, name) for namespace, name in refs)

    def container_restarts(self, deployments):
        return {d.ref: self.restarts(d) for d in deployments}

    # One Deployment at a time, which the subclasses below make fail or change.
    def deployment(self, namespace: str, name: str) -> DeploymentState:
        return [s for t, s in self.timeline if t <= self.clock.now][-1]

    def restarts(self, deployment: DeploymentState) -> tuple[ContainerRestarts, ...]:
        self.reads += 1
        if self.reads - 1 in self.failing_reads:
            raise WorkloadError("list Pods of Deployment ns/api failed: HTTP 503", transient=True)
        return (ContainerRestarts("api-7d9-abcde", "api", int(self.clock.now * self.rate)),)


class FakeMetrics:
    def __init__(self, clock: FakeClock, values: dict[str, object]) -> None:
        self.clock, self.values = clock, values

    def query(self, promql: str) -> QueryResult:
        value = self.values[promql]
        if isinstance(value, Exception):
            raise value
        if callable(value):
            value = value(self.clock.now)
        if value is None:
            return QueryResult(promql, ())
        return QueryResult(promql, (Series('{job="app"}', float(value)),))


def run(workloads, metrics=None, policy=VerifyPolicy(rollout_timeout=30, soak_seconds=20, interval_seconds=5),
        clock=None):
    return verify_rollout(workloads, metrics, [("ns", "api")], policy, clock=clock, sleep=clock.sleep)


def test_a_rolled_out_quiet_deployment_passes_after_sampling_the_whole_soak() -> None:
    clock = FakeClock()
    report = run(FakeWorkloads(clock, [(0, DONE)]), clock=clock)
    assert report.outcome is Outcome.PASSED, report.summary()
    assert [s["t"] for s in report.samples] == [0, 5, 10, 15, 20]
    assert clock.now == 20


def test_the_rollout_is_waited_for_until_every_replica_is_new_and_available() -> None:
    clock = FakeClock()
    rolling = replace(DONE, observed_generation=2, updated=0, available=2)
    halfway = replace(DONE, updated=1, available=1)
    report = run(FakeWorkloads(clock, [(0, rolling), (4, halfway), (9, DONE)]), clock=clock)
    assert report.outcome is Outcome.PASSED
    assert clock.now >= 9 + 20


@pytest.mark.parametrize(("state", "why"), [
    (replace(DONE, current=3), "1 old replica(s) pending termination (2 updated)"),
    # replicas=1 rolling update: the new Pod counts as updated at once, the old one is still available.
    (replace(DONE, replicas=1, updated=1, current=1, available=0), "0 of 1 updated replicas available"),
])
def test_updated_is_not_done_until_old_pods_are_gone_and_new_ones_available(state, why) -> None:
    assert state.problem() == f"Deployment ns/api: {why}"
    clock = FakeClock()
    report = run(FakeWorkloads(clock, [(0, state), (6, DONE)]), clock=clock)
    assert report.outcome is Outcome.PASSED and clock.now >= 6 + 20


def test_a_rollout_that_never_completes_fails_at_the_rollout_timeout_naming_the_deployment() -> None:
    clock = FakeClock()
    stuck = replace(DONE, updated=1, available=1)
    report = run(FakeWorkloads(clock, [(0, stuck)]), clock=clock)
    assert report.outcome is Outcome.FAILED
    assert "ns/api" in report.summary() and "not rolled out within 30s" in report.summary()
    assert "1 of 2 replicas updated" in report.summary()
    assert clock.now == pytest.approx(30, abs=2.1)


def test_progress_deadline_exceeded_fails_at_once() -> None:
    clock = FakeClock()
    dead = replace(DONE, updated=1, available=0,
                   progress_deadline_exceeded='ReplicaSet "api-7d9" has timed out progressing.')
    report = run(FakeWorkloads(clock, [(0, dead)]), clock=clock)
    assert report.outcome is Outcome.FAILED and clock.now == 0
    assert "exceeded its progress deadline" in report.summary() and "api-7d9" in report.summary()


def test_restarts_increasing_during_the_soak_fail_naming_the_container() -> None:
    clock = FakeClock()
    report = run(FakeWorkloads(clock, [(0, DONE)], restarts_per_second=0.2), clock=clock)
    assert report.outcome is Outcome.FAILED
    assert "container restarts increased during the soak: api-7d9-abcde/api +4" in report.summary()


def test_restarts_before_the_soak_are_the_baseline_not_a_failure() -> None:
    clock = FakeClock()
    clock.now = 100.0  # the pod restarted 100 * 0.01 = 1 time before verification started, none during

    class OldRestarts(FakeWorkloads):
        def restarts(self, deployment):
            return (ContainerRestarts("api-7d9-abcde", "api", 1),)

    assert run(OldRestarts(clock, [(0, DONE)]), clock=clock).outcome is Outcome.PASSED


def test_a_deployment_that_regresses_during_the_soak_fails() -> None:
    clock = FakeClock()
    report = run(FakeWorkloads(clock, [(0, DONE), (12, replace(DONE, available=1))]), clock=clock)
    assert report.outcome is Outcome.FAILED and "after the soak" in report.summary()


CHECK = MetricCheck("error-ratio", "coelho_error_ratio", max=0.05)


def test_a_metric_above_its_max_in_any_sample_fails_with_value_labels_and_time() -> None:
    clock = FakeClock()
    metrics = FakeMetrics(clock, {CHECK.query: lambda t: 0.01 if t < 10 else 0.2})
    report = run(FakeWorkloads(clock, [(0, DONE)]), metrics,
                 VerifyPolicy(rollout_timeout=30, soak_seconds=20, interval_seconds=5, checks=(CHECK,)), clock)
    assert report.outcome is Outcome.FAILED
    assert 'error-ratio: coelho_error_ratio = 0.2 on {job="app"} at +10s, above max 0.05' in report.summary()


def test_a_metric_below_its_min_fails() -> None:
    clock = FakeClock()
    check = MetricCheck("throughput", "rate(x[1m])", min=1)
    report = run(FakeWorkloads(clock, [(0, DONE)]), FakeMetrics(clock, {check.query: 0.5}),
                 VerifyPolicy(soak_seconds=0, checks=(check,)), clock)
    assert report.outcome is Outcome.FAILED and "below min 1" in report.summary()
    assert len(report.samples) == 1  # no soak: one sample right after the rollout


@pytest.mark.parametrize(("value", "why"), [(None, "no series"), (math.nan, "NaN")])
def test_no_data_in_every_sample_is_inconclusive_and_says_why(value, why) -> None:
    clock = FakeClock()
    report = run(FakeWorkloads(clock, [(0, DONE)]), FakeMetrics(clock, {CHECK.query: value}),
                 VerifyPolicy(soak_seconds=10, interval_seconds=5, checks=(CHECK,)), clock)
    assert report.outcome is Outcome.INCONCLUSIVE
    assert f"error-ratio: inconclusive, coelho_error_ratio gave no number in any of 3 sample(s) ({why})" \
        in report.summary()


def test_some_samples_without_data_still_judge_the_others() -> None:
    clock = FakeClock()
    metrics = FakeMetrics(clock, {CHECK.query: lambda t: None if t < 5 else 0.01})
    report = run(FakeWorkloads(clock, [(0, DONE)]), metrics,
                 VerifyPolicy(soak_seconds=10, interval_seconds=5, checks=(CHECK,)), clock)
    assert report.outcome is Outcome.PASSED
    assert any("(1 sample(s) without data)" in f.message for f in report.findings)


def test_a_failure_wins_over_an_inconclusive_check() -> None:
    clock = FakeClock()
    empty = MetricCheck("latency", "histogram_quantile(0.99, x)", max=0.5)
    report = run(FakeWorkloads(clock, [(0, DONE)]), FakeMetrics(clock, {CHECK.query: 1.0, empty.query: None}),
                 VerifyPolicy(soak_seconds=0, checks=(CHECK, empty)), clock)
    assert report.outcome is Outcome.FAILED
    assert {f.subject: f.outcome for f in report.findings}["latency"] is Outcome.INCONCLUSIVE


def test_a_transient_read_error_loses_one_sample_only() -> None:
    clock = FakeClock()
    metrics = FakeMetrics(clock, {CHECK.query: 0.01})
    report = run(FakeWorkloads(clock, [(0, DONE)], failing_reads=frozenset({2})), metrics,
                 VerifyPolicy(soak_seconds=10, interval_seconds=5, checks=(CHECK,)), clock)
    assert report.outcome is Outcome.PASSED
    assert report.samples[1]["restarts"]["ns/api"] == {"error": "list Pods of Deployment ns/api failed: HTTP 503"}
    down = FakeMetrics(clock, {CHECK.query: PrometheusError("cannot reach Prometheus", transient=True)})
    clock.now = 0
    report = run(FakeWorkloads(clock, [(0, DONE)]), down, VerifyPolicy(soak_seconds=10, interval_seconds=5,
                                                                       checks=(CHECK,)), clock)
    assert report.outcome is Outcome.INCONCLUSIVE and "cannot reach Prometheus" in report.summary()


def test_a_query_prometheus_refuses_is_an_error_not_a_verdict() -> None:
    clock = FakeClock()
    bad = FakeMetrics(clock, {CHECK.query: PrometheusError("refused the query 'x(' (HTTP 400): parse error")})
    with pytest.raises(PrometheusError, match="parse error"):
        run(FakeWorkloads(clock, [(0, DONE)]), bad, VerifyPolicy(soak_seconds=0, checks=(CHECK,)), clock)


def test_an_application_without_deployments_is_inconclusive() -> None:
    clock = FakeClock()
    report = verify_rollout(FakeWorkloads(clock, [(0, DONE)]), None, [], VerifyPolicy(), clock=clock,
                            sleep=clock.sleep)
    assert report.outcome is Outcome.INCONCLUSIVE and "manages no Deployment" in report.summary()


def test_checks_without_prometheus_are_a_configuration_error() -> None:
    clock = FakeClock()
    with pytest.raises(VerifyConfigError, match="COELHO_PROMETHEUS_URL"):
        run(FakeWorkloads(clock, [(0, DONE)]), None, VerifyPolicy(checks=(CHECK,)), clock)


class Flaky(FakeWorkloads):
    """Deployment reads fail transiently at the given read numbers (0-based)."""

    def __init__(self, *args, failing_deployment_reads: frozenset[int] = frozenset(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failing_deployment_reads, self.deployment_reads = failing_deployment_reads, 0

    def deployment(self, namespace: str, name: str) -> DeploymentState:
        self.deployment_reads += 1
        if self.deployment_reads - 1 in self.failing_deployment_reads:
            raise WorkloadError("get Deployment ns/api failed: HTTP 503", transient=True)
        return super().deployment(namespace, name)


def test_transient_errors_while_waiting_for_the_rollout_are_waited_through() -> None:
    clock = FakeClock()
    report = run(Flaky(clock, [(0, DONE)], failing_deployment_reads=frozenset({0, 1})), clock=clock)
    assert report.outcome is Outcome.PASSED


def test_a_transient_error_on_the_baseline_makes_the_next_read_the_baseline() -> None:
    clock = FakeClock()
    clock.now = 50.0  # 10 restarts before the soak (0.2/s): none of them is the release's
    report = run(FakeWorkloads(clock, [(0, DONE)], restarts_per_second=0.2, failing_reads=frozenset({0})),
                 clock=clock)
    assert report.outcome is Outcome.FAILED  # restarts keep growing at 0.2/s after the first good read
    clock2 = FakeClock()
    clock2.now = 50.0

    class Steady(FakeWorkloads):
        def restarts(self, deployment):
            super().restarts(deployment)
            return (ContainerRestarts("api-7d9-abcde", "api", 10),)

    assert run(Steady(clock2, [(0, DONE)], failing_reads=frozenset({0})), clock=clock2).outcome is Outcome.PASSED


def test_a_transient_error_on_the_last_read_is_inconclusive_and_says_so() -> None:
    clock = FakeClock()
    workloads = Flaky(clock, [(0, DONE)], failing_deployment_reads=frozenset({1}))  # 0: the rollout wait
    report = run(workloads, clock=clock)
    assert report.outcome is Outcome.INCONCLUSIVE and "ns/api not read after the soak" in report.summary()


def test_a_deployment_scaled_during_the_soak_is_not_judged_a_regression() -> None:
    clock = FakeClock()
    scaled = replace(DONE, generation=4, replicas=4, observed_generation=4, available=2)  # an autoscaler
    report = run(FakeWorkloads(clock, [(0, DONE), (12, scaled)]), clock=clock)
    assert report.outcome is Outcome.PASSED
    assert any("changed during the soak (generation 3 → 4); not judged" in f.message for f in report.findings)


def test_a_deadline_condition_from_an_older_generation_is_not_a_failure_of_this_one() -> None:
    clock = FakeClock()
    old_condition = replace(DONE, generation=4, observed_generation=3, progress_deadline_exceeded="old rollout")
    report = run(FakeWorkloads(clock, [(0, old_condition), (4, replace(DONE, generation=4, observed_generation=4))]),
                 clock=clock)
    assert report.outcome is Outcome.PASSED
