"""Rollback that automation does not undo: a new commit with the older images, Argo CD synced to it,
a hold that keeps new pushes recorded but undelivered, and a release that delivers the newest.

In process on real parts: git daemon, Docker engine and registry, Helm's engine, kmock with the
Argo CD controller double; the push sensor evaluated against the same Dagster instance.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import requests

from coelho_pipeline.dev import services
from coelho_pipeline.hold import current_hold
from pipeline_harness import SINGLE_TARGET
from pipeline_harness import git_push_sensor
from pipeline_harness import Pipeline, make_source_repo, materializations, settings_for

pytestmark = pytest.mark.docker

VALUES = "k3d/helm/values.yaml"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def delivered(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo):
    """A seed delivery and a newer (bad) FastAPI delivery, both Synced+Healthy in the Argo CD double."""
    repo = make_source_repo(git_server)
    double, kubeconfig = argocd_for_repo(repo)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(repo, settings_for(repo, f"{registry_addr}/coelho", tmp_path / "work", base_images,
                                               kubeconfig=str(kubeconfig)), instance)
        seed = repo.head()
        assert pipeline.deliver(seed).success
        bad = repo.push({"apps/fastapi/main.py": "print('bad')\n"}, "FastAPI: bad")
        assert pipeline.deliver(bad).success
        yield pipeline, double, seed, bad


def roll_back(pipeline: Pipeline, sha: str, reason: str = "FastAPI errors") -> dg.ExecuteInProcessResult:
    if sha not in pipeline.instance.get_dynamic_partitions("source_commits"):
        pipeline.instance.add_dynamic_partitions("source_commits", [sha])
    return pipeline.defs.resolve_job_def("rollback").execute_in_process(
        partition_key=sha, instance=pipeline.instance, raise_on_error=False,
        run_config={"ops": {"rollback_commit": {"config": {"reason": reason}}}})


def tick(pipeline: Pipeline, cursor: str) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=cursor,
                                      resources={"git": pipeline.defs.resources["git"]})
    return git_push_sensor(context)


def live_images(double) -> dict[str, str]:
    return {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in double.deployments().items()}


def test_rollback_holds_new_pushes_and_release_delivers_the_newest(delivered) -> None:
    pipeline, double, seed, bad = delivered
    registry = pipeline.settings.registry

    result = roll_back(pipeline, seed)

    assert result.success
    sha, _, subject = pipeline.repo.log(1)[0]
    assert subject == f"Roll back to {seed} [skip ci]"
    message = services.git("log", "-1", "--format=%B", sha, cwd=pipeline.repo.bare)
    assert {f"Source-Commit: {seed}", f"Rolled-Back-From: {bad}"} <= set(message.splitlines())
    assert f"fastapi.image.tag: {bad} -> {seed}" in message
    values = pipeline.repo.show("master", VALUES)
    assert values.count(f'"{seed}"') == 3 and bad not in values
    assert live_images(double)["coelho-realtime-fastapi"] == f"{registry}/fastapi:{seed}"
    record = materializations(result)["rollback_commit"]
    assert record["commit"] == sha and record["argocd_revision"] == sha and record["argocd_health"] == "Healthy"
    hold = current_hold(pipeline.instance, SINGLE_TARGET)
    assert hold.held and hold.rolled_back_to == seed and hold.reason == "FastAPI errors"

    # Held: a new push is recorded by the sensor, not delivered; a manual delivery is refused.
    before_fix = pipeline.repo.head()
    fix = pipeline.repo.push({"apps/sveltekit/main.py": "print('fix')\n"}, "SvelteKit: unrelated fix")
    held_tick = tick(pipeline, before_fix)
    assert not held_tick.run_requests
    assert held_tick.skip_reason.skip_message.startswith("held since") and "rollback to" in \
        held_tick.skip_reason.skip_message
    assert fix in held_tick.asset_events[0].metadata["recorded_while_held"].value
    refused = pipeline.deliver(fix)
    assert not refused.success
    assert "refused: deliveries are held since" in refused.failure_data_for_node("source_commit").error.message
    assert pipeline.repo.head() == fix  # nothing committed

    # Released: the next tick delivers the newest commit, recorded during the hold.
    assert pipeline.defs.resolve_job_def("release_hold").execute_in_process(instance=pipeline.instance).success
    assert not current_hold(pipeline.instance, SINGLE_TARGET).held
    after = tick(pipeline, fix)
    assert [r.partition_key for r in after.run_requests] == [fix]
    assert tick(pipeline, fix).run_requests[0].run_key == after.run_requests[0].run_key  # one run per release
    assert pipeline.deliver(fix).success
    assert f'"{fix}"' in pipeline.repo.show("master", VALUES)


def test_a_rollback_to_a_commit_never_delivered_is_refused(delivered) -> None:
    pipeline, _, _, _ = delivered
    undelivered = pipeline.repo.push({"README.md": "# never delivered\n"}, "Docs, not delivered")

    result = roll_back(pipeline, undelivered)

    assert not result.success
    assert "it was never delivered" in result.failure_data_for_node("rollback_commit").error.message
    assert pipeline.repo.head() == undelivered and current_hold(pipeline.instance, SINGLE_TARGET) is None


def test_a_rollback_whose_images_are_gone_is_refused(delivered, registry_addr: str) -> None:
    pipeline, _, seed, _ = delivered
    head = pipeline.repo.head()
    url = f"http://{registry_addr}/v2/coelho/sveltekit/manifests"
    digest = requests.head(f"{url}/{seed}", headers={"Accept": DOCKER_MANIFEST}, timeout=10).headers[
        "Docker-Content-Digest"]
    assert requests.delete(f"{url}/{digest}", timeout=10).status_code == 202

    result = roll_back(pipeline, seed)

    assert not result.success
    message = result.failure_data_for_node("rollback_commit").error.message
    assert f"coelho/sveltekit:{seed} (sveltekit) is gone from the registry" in message
    assert pipeline.repo.head() == head and current_hold(pipeline.instance, SINGLE_TARGET) is None


def test_a_commit_step_materialized_alone_during_the_hold_pushes_nothing(delivered) -> None:
    pipeline, _, seed, _ = delivered
    pending = pipeline.repo.push({"apps/fastapi/main.py": "print('pending')\n"}, "FastAPI: checked, not committed")
    pipeline.instance.add_dynamic_partitions("source_commits", [pending])
    job = pipeline.defs.resolve_job_def("deliver_commit")
    checked = job.execute_in_process(partition_key=pending, instance=pipeline.instance, asset_selection=[
        dg.AssetKey("source_commit"), *(dg.AssetKey(["image", a]) for a in ("fastapi", "kafka_producers", "sveltekit")),
        dg.AssetKey("helm_values")])
    assert checked.success
    assert roll_back(pipeline, seed).success
    head = pipeline.repo.head()

    alone = job.execute_in_process(partition_key=pending, instance=pipeline.instance, raise_on_error=False,
                                   asset_selection=[dg.AssetKey("manifest_commit")])

    assert not alone.success
    assert "refused: deliveries are held since" in alone.failure_data_for_node("manifest_commit").error.message
    assert pipeline.repo.head() == head and pending not in pipeline.repo.show("master", VALUES)
