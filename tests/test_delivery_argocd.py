"""Delivery into an Argo CD Application served by kmock, with the controller double moving its status.

The double (tests/argocd_double.py) is not Argo CD: it reads the values file at the synced revision
from the same Git remote and writes the Deployments' images, as a sync would.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipeline_harness import Pipeline, check_results, make_source_repo, materializations, settings_for

pytestmark = pytest.mark.docker


@pytest.fixture
def delivery(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo):
    prefix = f"{registry_addr}/coelho"
    repo = make_source_repo(git_server)

    def start(**double_options):
        double, kubeconfig = argocd_for_repo(repo, **double_options)
        settings = settings_for(repo, prefix, tmp_path / "work", base_images, kubeconfig=str(kubeconfig))
        return Pipeline(repo, settings, instance), double

    with dg.instance_for_test() as instance:
        yield start


def live_images(double) -> dict[str, str]:
    return {name: d["spec"]["template"]["spec"]["containers"][0]["image"] for name, d in double.deployments().items()}


def test_fastapi_change_ends_synced_and_healthy_at_the_manifest_commit(delivery) -> None:
    pipeline, double = delivery(stale_health_after_sync=True)
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "FastAPI: v2")

    result = pipeline.deliver(change)

    assert result.success
    manifest = pipeline.repo.head()
    sync = materializations(result)["argocd_sync"]
    assert (sync["revision"], sync["sync"], sync["health"], sync["operation"]) == (
        manifest, "Synced", "Healthy", "Succeeded")
    assert sync["seconds_to_converge"] > 0
    registry = pipeline.settings.registry
    assert live_images(double) == {
        "coelho-realtime-fastapi": f"{registry}/fastapi:{change}",
        "coelho-realtime-kafka-producers": f"{registry}/kafka-producers:{seed}",
        "coelho-realtime-sveltekit": f"{registry}/sveltekit:{seed}",
    }
    operation = double.application()["status"]["operationState"]["operation"]
    assert operation["sync"]["revision"] == manifest
    assert operation["initiatedBy"]["username"] == "coelho-pipeline"


def test_a_failed_sync_fails_the_run_with_argocds_message(delivery) -> None:
    pipeline, double = delivery()
    seed = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, "f" * 40])
    double.fail_next_sync("one or more objects failed to apply: quota exceeded")

    result = pipeline.deliver(seed)

    assert not result.success
    failure = result.failure_data_for_node("argocd_sync")
    assert "quota exceeded" in failure.error.message
    assert "argocd_sync" not in materializations(result)


def test_drift_check_passes_in_step_and_names_each_difference(delivery) -> None:
    pipeline, double = delivery()
    seed = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, "e" * 40])
    assert pipeline.deliver(seed).success
    drift = pipeline.defs.resolve_job_def("drift_check")

    in_step = drift.execute_in_process(instance=pipeline.instance)
    assert in_step.success and check_results(in_step) == {"live_matches_git": True}

    double.set_live_image("coelho-realtime-sveltekit", "127.0.0.1:5000/someone/hotfix:1")
    drifted = drift.execute_in_process(instance=pipeline.instance)

    assert drifted.success  # a failed drift check is a finding, not a broken run
    evaluation = drifted.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    differences = evaluation.metadata["differences"].value
    assert "coelho-realtime-sveltekit runs 127.0.0.1:5000/someone/hotfix:1" in differences
    assert f"sveltekit:{seed}" in differences
    assert "OutOfSync" in differences


def test_without_a_cluster_drift_check_says_not_checked(delivery) -> None:
    pipeline, _ = delivery()
    unconfigured = pipeline.with_settings(kubeconfig=None)
    result = unconfigured.defs.resolve_job_def("drift_check").execute_in_process(instance=pipeline.instance)
    assert result.success
    # Not evaluated (the UI shows it skipped), rather than red every ten minutes.
    assert result.get_asset_check_evaluations() == []
    assert not result.get_asset_materialization_events()
    (observation,) = result.get_asset_observation_events()
    assert observation.asset_observation_data.asset_observation.metadata["status"].value == "not checked"
    assert any("No cluster configured" in e.user_message for e in pipeline.instance.all_logs(result.run_id))
