"""Coalescing a burst, in process: an automatic delivery whose commit a newer queued delivery contains
is skipped after its first step; a delivery launched by hand always does its work."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline_harness import Pipeline, materializations

pytestmark = pytest.mark.docker

SENSOR_TAGS = {"dagster/sensor_name": "git_push_sensor"}


def _queue_delivery(pipeline: Pipeline, sha: str) -> dg.DagsterRun:
    """A delivery the sensor requested that has not started (the writer slot is taken). NOT_STARTED:
    a QUEUED record needs the code location's origin, which an in-process run does not have."""
    job = pipeline.defs.resolve_job_def("deliver_commit")
    return pipeline.instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.NOT_STARTED,
        tags={**SENSOR_TAGS, "coelho/source-sha": sha, "dagster/partition": sha})


def _deliver(pipeline: Pipeline, sha: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    pipeline.instance.add_dynamic_partitions("source_commits", [sha])
    return pipeline.defs.resolve_job_def("deliver_commit").execute_in_process(
        partition_key=sha, instance=pipeline.instance, tags={"coelho/source-sha": sha, **tags})


def test_an_automatic_delivery_superseded_by_a_queued_newer_one_does_nothing(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    older = pipeline.repo.push({"apps/fastapi/main.py": "print('older')\n"}, "FastAPI: older")
    newer = pipeline.repo.push({"apps/sveltekit/main.py": "print('newer')\n"}, "SvelteKit: newer")
    pipeline.instance.add_dynamic_partitions("source_commits", [newer])
    queued = _queue_delivery(pipeline, newer)

    result = _deliver(pipeline, older, SENSOR_TAGS)

    assert result.success
    assert materializations(result) == {}  # no build, no render, no commit, no sync
    assert pipeline.repo.head() == newer
    observation = pipeline.instance.fetch_observations(dg.AssetKey("source_commit"), limit=1).records[0]
    metadata = observation.asset_observation.metadata
    assert observation.partition_key == older and metadata["superseded_by_run"].value == queued.run_id

    # The newer delivery builds what the older commit changed too: nothing is lost.
    pipeline.instance.report_run_canceled(queued)  # the queued record stands in for the daemon's run
    done = _deliver(pipeline, newer, SENSOR_TAGS)
    rebuilt = sorted(k.split("/")[1] for k, md in materializations(done).items()
                     if k.startswith("image/") and md["rebuilt"])
    assert rebuilt == ["fastapi", "sveltekit"]
    assert pipeline.repo.log(1)[0][2] == f"Update image tags to {newer} [skip ci]"


def test_a_delivery_launched_by_hand_is_not_superseded(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    older = pipeline.repo.push({"apps/fastapi/main.py": "print('older, by hand')\n"}, "FastAPI: older")
    newer = pipeline.repo.push({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")
    pipeline.instance.add_dynamic_partitions("source_commits", [newer])
    _queue_delivery(pipeline, newer)

    result = _deliver(pipeline, older, {})

    assert result.success
    assert materializations(result)["manifest_commit"]["created"] is True


def test_a_queued_delivery_of_an_older_commit_does_not_supersede_a_newer_one(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    older = pipeline.repo.push({"apps/fastapi/main.py": "print('older, queued')\n"}, "FastAPI: older")
    newer = pipeline.repo.push({"apps/fastapi/main.py": "print('newer, running')\n"}, "FastAPI: newer")
    pipeline.instance.add_dynamic_partitions("source_commits", [older])
    _queue_delivery(pipeline, older)

    result = _deliver(pipeline, newer, SENSOR_TAGS)

    assert result.success
    assert materializations(result)["manifest_commit"]["created"] is True
