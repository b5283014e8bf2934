"""The single writer under the real daemon, caused the way a user causes it: a subset run from the
UI's launchpad (GraphQL, as the UI sends it), and a force-push while a delivery is building."""

from __future__ import annotations

import time

import dagster as dg
import pytest
import requests

from coelho_pipeline.dev import services
from daemon_harness import launch, wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

VALUES = "k3d/helm/values.yaml"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def test_a_manifest_commit_run_alone_cannot_publish_a_missing_image(dagster_dev, registry_addr: str) -> None:
    repo, instance, _, port = dagster_dev
    assert wait_for_run(instance, repo.head()).status == dg.DagsterRunStatus.SUCCESS
    # "[skip ci]" keeps the sensor off this commit: the user drives it from the launchpad alone.
    change = repo.push({"apps/fastapi/main.py": "print('by hand')\n"}, "FastAPI: by hand [skip ci]")
    instance.add_dynamic_partitions("source_commits", [change])
    launch(port, "deliver_commit", partition=change, tags={"coelho/source-sha": f"{change}-checked"},
           assets=["source_commit", "image/fastapi", "image/kafka_producers", "image/sveltekit", "helm_values"])
    assert wait_for_run(instance, f"{change}-checked").status == dg.DagsterRunStatus.SUCCESS
    url = f"http://{registry_addr}/v2/coelho/fastapi/manifests"
    digest = requests.head(f"{url}/{change}", headers={"Accept": DOCKER_MANIFEST}, timeout=10).headers[
        "Docker-Content-Digest"]
    assert requests.delete(f"{url}/{digest}", timeout=10).status_code == 202

    launch(port, "deliver_commit", partition=change, assets=["manifest_commit"],
           tags={"coelho/source-sha": f"{change}-commit"})
    run = wait_for_run(instance, f"{change}-commit")

    assert run.status == dg.DagsterRunStatus.FAILURE
    errors = [e.dagster_event.step_failure_data.error.message for e in instance.all_logs(run.run_id)
              if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]
    assert any(f"coelho/fastapi:{change} does not exist in the registry" in m for m in errors), "\n".join(errors)
    assert repo.head() == change  # nothing pushed


def test_a_commit_force_pushed_away_while_its_run_builds_never_lands(dagster_dev) -> None:
    repo, instance, _, _ = dagster_dev
    assert wait_for_run(instance, repo.head()).status == dg.DagsterRunStatus.SUCCESS
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    base = repo.head()
    dockerfile = (repo.clone / "apps/fastapi/Dockerfile").read_text()
    slow = dockerfile.replace("COPY . /srv\n", "COPY . /srv\nRUN sleep 12\n")  # a build long enough to race
    dropped = repo.push({"apps/fastapi/Dockerfile": slow}, "FastAPI: slow build, force-pushed away later")
    deadline = time.monotonic() + 120
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": dropped}))
        steps = [e.step_key for r in runs for e in instance.all_logs(r.run_id)
                 if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
        if "images" in steps:
            break
        assert time.monotonic() < deadline, "the delivery of the dropped commit never started building"
        time.sleep(0.5)

    services.git("reset", "-q", "--hard", base, cwd=repo.clone)
    human = repo.commit({"apps/sveltekit/main.py": "print('the new history')\n"}, "SvelteKit: new history")
    services.git("push", "-q", "--force", "origin", "HEAD:refs/heads/master", cwd=repo.clone)

    gone = wait_for_run(instance, dropped)
    delivered = wait_for_run(instance, human)

    assert gone.status == dg.DagsterRunStatus.FAILURE
    errors = [e.dagster_event.step_failure_data.error.message for e in instance.all_logs(gone.run_id)
              if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]
    assert any(f"commit {dropped} is no longer on master" in m for m in errors), errors
    assert delivered.status == dg.DagsterRunStatus.SUCCESS
    values = repo.show("master", VALUES)
    assert dropped not in values and f'"{human}"' in values
    assert all(dropped not in services.git("log", "-1", "--format=%B", sha, cwd=repo.bare)
               for sha, _, _ in repo.log(5))
