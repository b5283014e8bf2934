"""The single writer publishes only what it verified, where the user's registry is, and never half-done.

In process, on real parts: the git daemon remote, the Docker engine, the session's registry on a
random port (values.yaml as shipped names 127.0.0.1:5000, never this one), Helm's engine, and for
the end-to-end case the Argo CD controller double on kmock.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import requests

from coelho_pipeline.dev import services
from coelho_pipeline.domain import VerifiedValues
from pipeline_harness import APPS, Pipeline, make_source_repo, materializations, settings_for

pytestmark = pytest.mark.docker

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
VALUES = "k3d/helm/values.yaml"


def run(pipeline: Pipeline, sha: str, *assets: str) -> dg.ExecuteInProcessResult:
    """A run of deliver_commit for ``sha`` with only ``assets`` selected (the UI's "Materialize selected")."""
    if sha not in pipeline.instance.get_dynamic_partitions("source_commits"):
        pipeline.instance.add_dynamic_partitions("source_commits", [sha])
    job = pipeline.defs.resolve_job_def("deliver_commit")
    return job.execute_in_process(partition_key=sha, instance=pipeline.instance, raise_on_error=False,
                                  asset_selection=[dg.AssetKey.from_user_string(a) for a in assets])


def up_to_helm_values(pipeline: Pipeline, sha: str) -> dg.ExecuteInProcessResult:
    result = run(pipeline, sha, "source_commit", *(f"image/{a}" for a in APPS), "helm_values")
    assert result.success
    return result


def delete_image(registry_addr: str, repository_path: str, tag: str) -> None:
    url = f"http://{registry_addr}/v2/{repository_path}/manifests"
    digest = requests.head(f"{url}/{tag}", headers={"Accept": DOCKER_MANIFEST}, timeout=10).headers[
        "Docker-Content-Digest"]
    assert requests.delete(f"{url}/{digest}", timeout=10).status_code == 202


def failure_message(result: dg.ExecuteInProcessResult, step: str) -> str:
    return result.failure_data_for_node(step).error.message


def images_built(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted(k.split("/")[1] for k, md in materializations(result).items()
                  if k.startswith("image/") and md["rebuilt"])


# -- 1. one source of truth for image names ---------------------------------------------------------

def test_a_registry_values_yaml_does_not_name_gets_a_fastapi_change_delivered_end_to_end(
        tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo) -> None:
    prefix = f"{registry_addr}/team-a/ml"  # another port and another path than values.yaml names
    repo = make_source_repo(git_server)
    assert "127.0.0.1:5000/coelho/fastapi" in repo.show("master", VALUES)
    double, kubeconfig = argocd_for_repo(repo)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(repo, settings_for(repo, prefix, tmp_path / "work", base_images,
                                               kubeconfig=str(kubeconfig)), instance)
        seed = repo.head()
        assert pipeline.deliver(seed).success
        before = repo.head()
        change = repo.push({"apps/fastapi/main.py": "print('team a')\n"}, "FastAPI: team a")

        result = pipeline.deliver(change)

        assert result.success
        assert images_built(result) == ["fastapi"]  # one build
        log = repo.log(3)
        assert [s for _, _, s in log[:2]] == [f"Update image tags to {change} [skip ci]", "FastAPI: team a"]
        assert log[2][0] == before  # one commit
        values = repo.show("master", VALUES)
        assert f"repository: {prefix}/fastapi\n" in values and f'tag: "{change}"' in values
        sync = materializations(result)["argocd_sync"]
        assert (sync["sync"], sync["health"]) == ("Synced", "Healthy")
        live = {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in double.deployments().items()}
        assert live["coelho-realtime-fastapi"] == f"{prefix}/fastapi:{change}"  # exactly what was pushed
        assert live["coelho-realtime-sveltekit"] == f"{prefix}/sveltekit:{seed}"


@pytest.mark.parametrize(("broken", "key"), [
    pytest.param(lambda v: v.replace("    repository: 127.0.0.1:5000/coelho/fastapi\n", "", 1),
                 "fastapi.image.repository", id="repository-missing"),
    pytest.param(lambda v: v.replace("    repository: 127.0.0.1:5000/coelho/sveltekit\n",
                                     "    repository: {host: 127.0.0.1:5000, name: coelho/sveltekit}\n", 1),
                 "sveltekit.image.repository", id="repository-not-a-scalar"),
    pytest.param(lambda v: v.replace('    tag: ""\n', "    tag:\n      - latest\n", 1),
                 "fastapi.image.tag", id="tag-is-a-list"),
])
def test_values_that_cannot_be_written_are_refused_before_any_image_is_built(
        pipeline: Pipeline, registry_addr: str, broken, key: str) -> None:
    clone = pipeline.repo.clone
    (clone / VALUES).write_text(broken((clone / VALUES).read_text()))
    head = pipeline.repo.push({}, "Edit values by hand")

    result = pipeline.deliver(head)

    assert not result.success
    message = failure_message(result, "source_commit")
    assert key in message and "COELHO_REGISTRY" in message and VALUES in message
    assert not [k for k in materializations(result) if k.startswith("image/")]
    catalog = requests.get(f"http://{registry_addr}/v2/_catalog", timeout=10).json()["repositories"]
    built = [r for r in catalog for a in ("fastapi", "sveltekit", "kafka-producers")
             if r == f"coelho/{a}" and head in requests.get(f"http://{registry_addr}/v2/{r}/tags/list",
                                                             timeout=10).json().get("tags", [])]
    assert built == []  # nothing pushed under this commit
    assert pipeline.repo.head() == head


# -- 2. verification lives where the write happens ----------------------------------------------------

def test_manifest_commit_alone_refuses_a_tag_whose_image_is_gone(pipeline: Pipeline, registry_addr: str) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "FastAPI: v2")
    up_to_helm_values(pipeline, change)
    delete_image(registry_addr, "coelho/fastapi", change)  # e.g. a registry clean-up meanwhile

    result = run(pipeline, change, "manifest_commit")

    assert not result.success
    message = failure_message(result, "manifest_commit")
    assert f"coelho/fastapi:{change} does not exist in the registry" in message and "nothing committed" in message
    assert pipeline.repo.head() == change


def test_a_whole_delivery_renders_its_values_once(pipeline: Pipeline) -> None:
    """helm_values' checks passed on the tip manifest_commit pushes onto, in the same run: the same text is
    not rendered again, its images are looked up again (a step run alone, as above, renders again)."""
    assert pipeline.deliver(pipeline.repo.head()).success
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "FastAPI: v2")

    result = pipeline.deliver(change)

    assert result.success and materializations(result)["manifest_commit"]["created"]
    logged = [e.user_message for e in pipeline.instance.all_logs(result.run_id) if e.step_key == "manifest_commit"]
    assert any("rendered earlier in this run with this very text, not again; its images looked up again" in m
               for m in logged), logged


def test_verified_values_cover_only_the_same_text_on_the_same_tip() -> None:
    text = "fastapi:\n  image:\n    tag: abc\n"
    verified = VerifiedValues("run-1", "tip-1", VerifiedValues.of(text))
    assert verified.covers("tip-1", text)
    assert not verified.covers("tip-2", text)  # the branch moved: the push lands elsewhere, checked again
    assert not verified.covers("tip-1", text.replace("abc", "abd"))


def test_manifest_commit_alone_refuses_values_the_chart_does_not_render_with(pipeline: Pipeline) -> None:
    """The blocking check failed and stopped the run; the user then materializes manifest_commit alone,
    on the same tip: the commit step renders again itself and refuses."""
    assert pipeline.deliver(pipeline.repo.head()).success
    template = "k3d/helm/templates/fastapi/deployment.yaml"
    broken = pipeline.repo.push({template: pipeline.repo.show("master", template) + "\n{{ .Values.nosuch.key }}\n",
                                 "apps/fastapi/main.py": "print('v2')\n"}, "FastAPI v2 with a broken template")
    checked = run(pipeline, broken, "source_commit", *(f"image/{a}" for a in APPS), "helm_values")
    assert not checked.success and "manifest_commit" not in materializations(checked)

    result = run(pipeline, broken, "manifest_commit")

    assert not result.success
    message = failure_message(result, "manifest_commit")
    assert "does not render" in message and "nosuch" in message and "nothing committed" in message
    assert pipeline.repo.head() == broken


# -- 3. history rewritten during a run ---------------------------------------------------------------

def test_a_commit_force_pushed_away_after_its_checks_never_lands(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    base = pipeline.repo.head()
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('to be dropped')\n"}, "FastAPI: dropped later")
    up_to_helm_values(pipeline, change)
    clone = pipeline.repo.clone
    services.git("reset", "-q", "--hard", base, cwd=clone)
    rewritten = pipeline.repo.commit({"README.md": "# rewritten\n"}, "Rewritten history")
    services.git("push", "-q", "--force", "origin", "HEAD:refs/heads/master", cwd=clone)

    result = run(pipeline, change, "manifest_commit")

    assert not result.success
    message = failure_message(result, "manifest_commit")
    assert f"commit {change} is no longer on master" in message
    assert pipeline.repo.head() == rewritten
    assert change not in pipeline.repo.show("master", VALUES)


# -- 5. every partition tells its own story ------------------------------------------------------------

def test_rerunning_an_old_commit_records_that_commits_own_facts(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    old = pipeline.repo.push({"apps/fastapi/main.py": "print('old')\n"}, "FastAPI: old")
    first = pipeline.deliver(old)
    assert first.success
    old_manifest = pipeline.repo.head()
    newer = pipeline.repo.push({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")
    assert pipeline.deliver(newer).success
    head = pipeline.repo.head()

    again = pipeline.deliver(old)

    assert again.success and pipeline.repo.head() == head  # nothing written, nothing rolled back
    mats, before = materializations(again), materializations(first)
    assert mats["source_commit"]["apps_changed"] == "fastapi" == before["source_commit"]["apps_changed"]
    registry = pipeline.settings.registry
    assert mats["image/fastapi"]["image"] == f"{registry}/fastapi:{old}" == before["image/fastapi"]["image"]
    assert mats["image/fastapi"]["digest"] == before["image/fastapi"]["digest"]
    assert mats["manifest_commit"]["commit"] == old_manifest
    assert mats["manifest_commit"]["reason"].startswith("nothing to do, already committed as")
    latest = pipeline.instance.get_latest_materialization_event(dg.AssetKey(["image", "fastapi"]))
    assert latest.asset_materialization.partition == old


def test_an_older_commit_delivered_after_a_newer_one_says_who_delivered_it(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=pipeline.repo.clone)
    older = pipeline.repo.commit({"apps/fastapi/main.py": "print('older')\n"}, "FastAPI: older")
    newer = pipeline.repo.commit({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")
    pipeline.repo.publish()
    assert pipeline.deliver(newer).success
    newer_manifest = pipeline.repo.head()

    result = pipeline.deliver(older)

    assert result.success and pipeline.repo.head() == newer_manifest
    manifest = materializations(result)["manifest_commit"]
    assert manifest["created"] is False and manifest["commit"] == newer_manifest
    assert f"already delivered by {newer[:12]}" in manifest["reason"]
    assert f'tag: "{newer}"' in pipeline.repo.show("master", VALUES)
