"""Verification after deploy, through the real parts: the delivery syncs the Argo CD double's
Application, the double's Deployment controller and kubelet roll the Deployments out (kmock, read
with the official client), and a real Prometheus scrapes a loopback exporter for the metric checks.
Auto-rollback's decision on these real runs is evaluated with the failure sensor itself."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.auto_rollback import AUTO_ROLLBACK_TAG
from coelho_pipeline.rollout.prometheus import PrometheusClient
from coelho_pipeline.rollout.verify import MetricCheck
from pipeline_harness import delivery_failure_sensor
from pipeline_harness import Pipeline, make_source_repo, materializations, settings_for

pytestmark = pytest.mark.docker

DEPLOYMENTS = ("coelho-realtime-fastapi", "coelho-realtime-kafka-producers", "coelho-realtime-sveltekit")


@pytest.fixture
def delivery(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo):
    repo = make_source_repo(git_server)

    def start(double_options: dict | None = None, **settings):
        double, kubeconfig = argocd_for_repo(repo, **(double_options or {}))
        return Pipeline(repo, settings_for(repo, f"{registry_addr}/coelho", tmp_path / "work", base_images,
                                           kubeconfig=str(kubeconfig), **settings), instance), double

    with dg.instance_for_test() as instance:
        yield start


def rollout_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "rollout_verified"]
    return evaluation


def metadata(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


def exported(prometheus, value: float) -> str:
    """A fresh gauge set to ``value`` on the exporter, once Prometheus has scraped it; its name."""
    url, exporter = prometheus
    name = f"coelho_test_error_ratio_{uuid.uuid4().hex[:8]}"
    exporter.set(name, value)
    client = PrometheusClient(url)
    deadline = time.monotonic() + 20
    while not client.query(name).numbers:
        assert time.monotonic() < deadline, f"Prometheus never scraped {name}"
        time.sleep(0.3)
    return name


def test_a_delivery_is_verified_and_the_check_holds_every_sample(delivery) -> None:
    pipeline, double = delivery()

    result = pipeline.deliver(pipeline.repo.head())

    assert result.success
    check = rollout_check(result)
    assert check.passed, check.description
    md = metadata(check)
    assert md["outcome"] == "passed"
    assert md["sample_count"] == len(md["samples"]) >= 4  # 1 s soak every 0.25 s
    for name in DEPLOYMENTS:
        assert f"`coelho-realtime/{name}` | 1 | 1 | 1 | 1 | 1 | rolled out |" in md["deployments"]
    assert materializations(result)["argocd_sync"]["verification"] == "passed"


def test_a_new_image_is_verified_at_the_deployments_new_generation(delivery) -> None:
    pipeline, double = delivery()
    assert pipeline.deliver(pipeline.repo.head()).success
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "FastAPI: v2")

    result = pipeline.deliver(change)

    assert result.success and rollout_check(result).passed
    assert "`coelho-realtime/coelho-realtime-fastapi` | 2 | 2 | 1 | 1 | 1 | rolled out |" in \
        metadata(rollout_check(result))["deployments"]
    assert double.deployments()["coelho-realtime-fastapi"]["metadata"]["generation"] == 2


def test_verification_fails_on_a_real_prometheus_query_and_the_step_is_not_retried(delivery, prometheus) -> None:
    gauge = exported(prometheus, 0.2)
    pipeline, _ = delivery(prometheus_url=prometheus[0],
                           verify_checks=(MetricCheck("error-ratio", f"max({gauge})", max=0.05),))

    result = pipeline.deliver(pipeline.repo.head())

    assert not result.success
    check = rollout_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert f"error-ratio: max({gauge}) = 0.2 on {{}} at +0s, above max 0.05" in check.description
    samples = metadata(check)["samples"]
    assert all(s["metrics"]["error-ratio"] == {"{}": 0.2} for s in samples)
    # The deployment happened and is recorded; the step then failed, once, without retries.
    assert materializations(result)["argocd_sync"]["verification"] == "failed"
    failure = result.failure_data_for_node("argocd_sync")
    assert "rollout failed" in failure.error.message
    assert failure.user_failure_data.metadata["deploy_failure"].value == "verification failed"
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


def test_a_query_with_no_data_is_inconclusive_a_warning_and_not_a_failure(delivery, prometheus) -> None:
    pipeline, _ = delivery(prometheus_url=prometheus[0],
                           verify_checks=(MetricCheck("latency", "max(coelho_metric_nobody_exports)", max=0.5),))

    result = pipeline.deliver(pipeline.repo.head())

    assert result.success
    check = rollout_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "latency: inconclusive, max(coelho_metric_nobody_exports) gave no number in any of" in check.description
    assert "(no series)" in check.description
    assert materializations(result)["argocd_sync"]["verification"] == "inconclusive"


def test_a_metric_within_bounds_passes(delivery, prometheus) -> None:
    gauge = exported(prometheus, 0.01)
    pipeline, _ = delivery(prometheus_url=prometheus[0],
                           verify_checks=(MetricCheck("error-ratio", f"max({gauge})", max=0.05),))
    result = pipeline.deliver(pipeline.repo.head())
    assert result.success and rollout_check(result).passed
    assert "error-ratio: <= 0.05 in" in metadata(rollout_check(result))["findings"]


def test_containers_restarting_during_the_soak_fail_verification(delivery) -> None:
    pipeline, double = delivery(verify_soak=2.0)
    double.crash_loop("coelho-realtime-sveltekit", every=0.3)

    result = pipeline.deliver(pipeline.repo.head())

    assert not result.success
    check = rollout_check(result)
    assert "container restarts increased during the soak: coelho-realtime-sveltekit-" in check.description
    assert double.application()["status"]["health"]["status"] == "Healthy"  # Argo CD alone would not have seen it


def failure_sensor(pipeline: Pipeline, result: dg.ExecuteInProcessResult, *, auto_rollback: bool):
    resources = pipeline.with_settings(auto_rollback=auto_rollback).defs.resources
    context = dg.build_run_status_sensor_context(
        sensor_name="delivery_failure_sensor", dagster_event=result.get_run_failure_event(),
        dagster_instance=pipeline.instance, dagster_run=pipeline.instance.get_run_by_id(result.run_id),
        resources={k: resources[k] for k in ("notify", "argocd", "verification")},
    ).for_run_failure()
    return delivery_failure_sensor(context)


def test_a_degraded_delivery_is_rolled_back_only_when_opted_in(delivery) -> None:
    pipeline, double = delivery(sync_timeout=4)
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    bad = pipeline.repo.push({"apps/fastapi/main.py": "print('bad')\n"}, "FastAPI: bad")
    double.degrade("Deployment \"coelho-realtime-fastapi\" exceeded its progress deadline")

    failed = pipeline.deliver(bad)

    assert not failed.success
    assert failed.failure_data_for_node("argocd_sync").user_failure_data.metadata["deploy_failure"].value == \
        "degraded"
    assert failure_sensor(pipeline, failed, auto_rollback=False) is None
    request = failure_sensor(pipeline, failed, auto_rollback=True)
    assert isinstance(request, dg.RunRequest)
    assert (request.job_name, request.partition_key) == ("rollback", seed)
    assert request.tags[AUTO_ROLLBACK_TAG] == failed.run_id
    reason = request.run_config["ops"]["rollback_commit"]["config"]["reason"]
    assert reason.startswith(f"auto-rollback: the delivery of {bad[:12]} degraded (")


def test_a_failed_build_is_not_rolled_back_even_when_opted_in(delivery) -> None:
    pipeline, _ = delivery()
    assert pipeline.deliver(pipeline.repo.head()).success
    broken = pipeline.repo.push({"apps/fastapi/Dockerfile": "FROM scratch\nRUN false\n"}, "FastAPI: broken build")

    failed = pipeline.deliver(broken)

    assert not failed.success
    skipped = failure_sensor(pipeline, failed, auto_rollback=True)
    assert isinstance(skipped, dg.SkipReason)
    assert "failed before anything new ran in the cluster" in skipped.skip_message


def test_without_a_cluster_the_rollout_is_said_to_be_not_verified(pipeline: Pipeline) -> None:
    result = pipeline.deliver(pipeline.repo.head())

    assert result.success
    check = rollout_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == "not verified: no cluster is configured, so nothing was deployed"
    assert "argocd_sync" not in materializations(result)


def test_a_query_prometheus_rejects_fails_before_anything_is_synced(delivery, prometheus) -> None:
    pipeline, double = delivery(prometheus_url=prometheus[0],
                                verify_checks=(MetricCheck("error-ratio", "sum(rate(x[1m])", max=0.05),))

    result = pipeline.deliver(pipeline.repo.head())

    assert not result.success
    message = result.failure_data_for_node("argocd_sync").error.message
    assert "metric check error-ratio (COELHO_VERIFY_QUERIES), before syncing anything" in message
    assert "parse error" in message
    assert not double.events_of("operation-started") and "operation" not in double.application()


def test_synced_but_never_healthy_is_a_deploy_failure_auto_rollback_acts_on(delivery) -> None:
    pipeline, _ = delivery({"health_delay": 30.0}, sync_timeout=3)

    result = pipeline.deliver(pipeline.repo.head())

    assert not result.success
    failure = result.failure_data_for_node("argocd_sync")
    assert "did not become Synced+Healthy" in failure.error.message
    assert failure.user_failure_data.metadata["deploy_failure"].value == "never became healthy"
