"""Delivery end to end, in process: real git daemon, real Docker engine and registry, real chart render.

Argo CD is not configured here (no KUBECONFIG): these runs also show that the sync step says so and
leaves its asset unmaterialized. The Argo CD part is in test_delivery_argocd.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
import requests

from coelho_pipeline.dev import services
from pipeline_harness import (
    Pipeline, check_results, make_source_repo, materializations, settings_for,
)

pytestmark = pytest.mark.docker

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def rebuilt(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted(k.split("/")[1] for k, md in materializations(result).items()
                  if k.startswith("image/") and md["rebuilt"])


def test_first_delivery_builds_every_app_and_commits_their_tags(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    later = pipeline.repo.push({"README.md": "# docs\n"}, "Docs")
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, later])

    result = pipeline.deliver(seed)

    assert result.success
    assert rebuilt(result) == ["fastapi", "kafka_producers", "sveltekit"]
    # No cluster here: nothing was deployed, so the rollout is "not verified" (a warning, never a pass).
    assert check_results(result) == {"tags_exist_in_registry": True, "chart_renders_with_built_images": True,
                                     "rollout_verified": False}
    head_sha, author, subject = pipeline.repo.log(1)[0]
    assert subject == f"Update image tags to {seed} [skip ci]"
    assert author == pipeline.settings.author_email
    values = pipeline.repo.show(head_sha, "k3d/helm/values.yaml")
    assert values.count(f'tag: "{seed}"') + values.count(f"tag: {seed}") == 3
    # values.yaml shipped naming 127.0.0.1:5000; the images went to the configured registry, and the
    # file now names exactly what was pushed.
    prefix = pipeline.settings.registry
    assert "127.0.0.1:5000/" not in values and prefix != "127.0.0.1:5000/coelho"
    for image in ("fastapi", "kafka-producers", "sveltekit"):
        assert f"repository: {prefix}/{image}\n" in values
    mats = materializations(result)
    assert mats["manifest_commit"]["created"] is True and mats["manifest_commit"]["commit"] == head_sha
    assert mats["image/fastapi"]["digest"].startswith("sha256:")
    assert "argocd_sync" not in mats  # no cluster configured: not materialized, and the log says why
    logs = [e.user_message for e in pipeline.instance.all_logs(result.run_id)]
    assert any("No cluster configured" in m for m in logs)


def test_fastapi_change_builds_one_image_and_commits_one_tag_line(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    before = pipeline.repo.head()
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('fastapi v2')\n"}, "FastAPI: v2")

    result = pipeline.deliver(change)

    assert result.success
    assert rebuilt(result) == ["fastapi"]
    mats = materializations(result)
    assert mats["image/kafka_producers"]["image"].endswith(f":{seed}")  # unchanged apps keep their tag
    log = pipeline.repo.log(3)
    assert [s for _, _, s in log[:2]] == [f"Update image tags to {change} [skip ci]", "FastAPI: v2"]
    diff = pipeline.repo.diff(change, log[0][0])
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 2, diff
    assert changed[0].startswith("-") and seed in changed[0] and "tag:" in changed[0]
    assert changed[1] == changed[0].replace(seed, change).replace("-", "+", 1)
    assert before != log[0][0]


def _skipped_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SKIPPED}


def test_docs_only_push_is_a_no_op_after_its_first_step(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    docs = pipeline.repo.push({"README.md": "# COELHO RealTime\n\nMore docs.\n"}, "Docs only")

    result = pipeline.deliver(docs)

    assert result.success
    # Nothing built, rendered, committed or synced: every step after source_commit is skipped.
    assert materializations(result) == {}
    assert _skipped_steps(result) == {"images", "helm_values", "manifest_commit", "argocd_sync"}
    assert pipeline.repo.head() == docs  # no manifest commit on top
    observation = pipeline.instance.fetch_observations(dg.AssetKey("source_commit"), limit=1).records[0]
    assert observation.partition_key == docs
    assert "no app changed" in observation.asset_observation.metadata["nothing_to_deliver"].value


@pytest.mark.parametrize("change", [
    {"k3d/helm/templates/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n"},
    None,  # a human edit of values.yaml itself (a replica count): also a change to deliver
], ids=["chart-template", "values-edit"])
def test_a_chart_or_values_change_without_an_app_change_is_delivered(pipeline: Pipeline, change) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    services.git("pull", "-q", "--ff-only", "origin", pipeline.repo.branch, cwd=pipeline.repo.clone)
    if change is None:
        values = (pipeline.repo.clone / "k3d/helm/values.yaml").read_text()
        change = {"k3d/helm/values.yaml": values + "\nextraNote: edited by hand\n"}
    sha = pipeline.repo.push(change, "Chart only")

    result = pipeline.deliver(sha)

    assert result.success
    assert rebuilt(result) == []
    assert "helm_values" in materializations(result) and not _skipped_steps(result)


def test_rerun_for_the_same_commit_makes_no_second_commit(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, "d" * 40])
    assert pipeline.deliver(seed).success
    head = pipeline.repo.head()

    again = pipeline.deliver(seed)

    assert again.success
    assert pipeline.repo.head() == head
    mats = materializations(again)
    assert mats["manifest_commit"]["created"] is False and mats["manifest_commit"]["commit"] == head
    assert rebuilt(again) == []  # the images are in the registry under this SHA already


def test_an_unchanged_app_whose_image_is_gone_is_rebuilt(pipeline: Pipeline, registry_addr: str) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    manifest = f"http://{registry_addr}/v2/coelho/kafka-producers/manifests"
    digest = requests.head(f"{manifest}/{seed}", headers={"Accept": DOCKER_MANIFEST}).headers["Docker-Content-Digest"]
    assert requests.delete(f"{manifest}/{digest}").status_code == 202
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v3')\n"}, "FastAPI: v3")

    result = pipeline.deliver(change)

    assert result.success
    assert rebuilt(result) == ["fastapi", "kafka_producers"]
    plan = materializations(result)["source_commit"]["plan"]
    assert f"{pipeline.settings.registry}/kafka-producers:{seed} is missing from the registry" in plan
    values = pipeline.repo.show("master", "k3d/helm/values.yaml")
    assert values.count(f'"{change}"') == 2 and values.count(f'"{seed}"') == 1


def test_a_new_registry_moves_every_app_there(pipeline: Pipeline) -> None:
    """COELHO_REGISTRY changed after a delivery: the images are not in the new registry, so every app
    is rebuilt there and every repository in values.yaml is rewritten: one source of truth."""
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    moved = pipeline.settings.registry.replace("/coelho", "/elsewhere")
    other = pipeline.with_settings(registry=moved)
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v3')\n"}, "FastAPI: v3")

    result = other.deliver(change)

    assert result.success
    assert rebuilt(result) == ["fastapi", "kafka_producers", "sveltekit"]
    values = pipeline.repo.show("master", "k3d/helm/values.yaml")
    for image in ("fastapi", "kafka-producers", "sveltekit"):
        assert f"repository: {moved}/{image}\n" in values
    assert pipeline.settings.registry + "/" not in values
    message = services.git("log", "-1", "--format=%B", "master", cwd=pipeline.repo.bare)
    assert f"fastapi.image.repository: {pipeline.settings.registry}/fastapi -> {moved}/fastapi" in message


def test_rerunning_an_older_commit_never_rolls_back_a_newer_delivery(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    seed_manifest = pipeline.repo.head()
    newer = pipeline.repo.push({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")
    assert pipeline.deliver(newer).success
    head = pipeline.repo.head()

    again = pipeline.deliver(seed)

    assert again.success and pipeline.repo.head() == head
    manifest = materializations(again)["manifest_commit"]
    # The partition keeps its own story: seed's own manifest commit, and the head it saw.
    assert manifest["commit"] == seed_manifest and manifest["branch_head"] == head
    assert "already committed" in manifest["reason"]
    assert f'tag: "{newer}"' in pipeline.repo.show("master", "k3d/helm/values.yaml")


def test_a_commit_that_is_not_on_the_branch_is_not_delivered(pipeline: Pipeline) -> None:
    clone = pipeline.repo.clone
    services.git("checkout", "-q", "-b", "feature", cwd=clone)
    feature = pipeline.repo.commit({"apps/fastapi/main.py": "print('feature')\n"}, "Feature branch work")
    services.git("push", "-q", "origin", "feature", cwd=clone)
    head = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [head, feature])

    result = pipeline.deliver(feature)

    assert not result.success
    assert re.search(f"commit {feature} is (not|no longer) on master",
                     result.failure_data_for_node("source_commit").error.message)
    assert pipeline.repo.head() == head


def test_a_change_to_a_real_app_is_delivered_alone(tmp_path: Path, git_server, registry_addr: str, base_images,
                                                  docker_host) -> None:
    """The three real apps of apps/, built from Git by the pipeline; then one producer change."""
    prefix = f"{registry_addr}/coelho"
    repo = make_source_repo(git_server, real_apps=True)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(repo, settings_for(repo, prefix, tmp_path / "work", base_images), instance)
        seed = repo.head()
        assert pipeline.deliver(seed).success
        source = "apps/kafka_producers/README.md"
        change = repo.push({source: repo.show("master", source) + "\nDelivered by coelho-pipeline.\n"},
                           "Producers: README")

        result = pipeline.deliver(change)

        assert result.success
        assert rebuilt(result) == ["kafka_producers"]
        diff = repo.diff(change, repo.head())
        changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert changed == [f'-    tag: "{seed}"', f'+    tag: "{change}"'], diff
        image = materializations(result)["image/kafka_producers"]
        assert image["image"] == f"{prefix}/kafka-producers:{change}" and image["digest"].startswith("sha256:")
