"""Case 7: a delivery that failed transiently, or whose run was lost, is requested again by the sensor
on a later tick (new run key, bounded); a terminal failure is not. Real runs of deliver_commit on a
persistent instance against the real git daemon; the sensor is evaluated on that instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import WILL_RETRY_TAG

from coelho_pipeline.dev import services
from coelho_pipeline.sensors import MAX_DELIVERY_ATTEMPTS, dagster_retries, failure_kind
from pipeline_harness import git_push_sensor
from pipeline_harness import Pipeline, make_source_repo, settings_for

SENSOR_TAGS = {"dagster/sensor_name": "git_push_sensor"}


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _pipeline(git_server, instance, tmp_path: Path, registry_prefix: str, **extra) -> Pipeline:
    repo = make_source_repo(git_server)
    return Pipeline(repo, settings_for(repo, registry_prefix, tmp_path / "work", {}, **extra), instance)


def _sensor_run(pipeline: Pipeline, sha: str, **tags: str) -> dg.ExecuteInProcessResult:
    """What the daemon does with the sensor's request: the partition, then deliver_commit tagged as the sensor's."""
    pipeline.instance.add_dynamic_partitions("source_commits", [sha])
    job = pipeline.defs.resolve_job_def("deliver_commit")
    return job.execute_in_process(partition_key=sha, instance=pipeline.instance, raise_on_error=False,
                                  tags={**SENSOR_TAGS, "coelho/source-sha": sha, **tags})


def _tick(pipeline: Pipeline, cursor: str | None):
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=cursor,
                                      resources={"git": pipeline.defs.resources["git"]})
    return git_push_sensor(context)


def _requests(result) -> list[dg.RunRequest]:
    return list(getattr(result, "run_requests", None) or [])


def test_a_delivery_that_failed_transiently_is_requested_again(git_server, instance, tmp_path) -> None:
    # Nothing listens on this port: every registry call is refused, the classic transient fault.
    pipeline = _pipeline(git_server, instance, tmp_path, f"127.0.0.1:{services.free_port()}/coelho")
    head = pipeline.repo.head()
    result = _sensor_run(pipeline, head)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert failure_kind(instance, run) == "transient", [
        e.dagster_event.step_failure_data.user_failure_data
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]

    tick = _tick(pipeline, head)  # no new commit: the cursor already is the head

    (request,) = _requests(tick)
    assert request.partition_key == head
    assert request.run_key == f"{head}@redelivery-1"
    assert request.tags["coelho/source-sha"] == head and request.tags["coelho/redelivery-of"] == run.run_id


def test_a_delivery_that_failed_terminally_is_not_requested_again(git_server, instance, tmp_path) -> None:
    # values.yaml is not where the settings say: bad input, another attempt cannot help.
    pipeline = _pipeline(git_server, instance, tmp_path, f"127.0.0.1:{services.free_port()}/coelho",
                         values_path="deploy/missing-values.yaml", chart_path="deploy")
    head = pipeline.repo.head()
    result = _sensor_run(pipeline, head)
    assert not result.success
    assert failure_kind(instance, instance.get_run_by_id(result.run_id)) == "terminal"

    tick = _tick(pipeline, head)

    assert not _requests(tick)
    assert "no new commit" in tick.skip_message


def test_a_lost_run_is_requested_again_a_bounded_number_of_times(git_server, instance, tmp_path) -> None:
    """A run marked failed from outside without any step failing (the code server saw its worker die, or
    run monitoring gave up on it) is lost, not judged: requested again until MAX_DELIVERY_ATTEMPTS runs."""
    pipeline = _pipeline(git_server, instance, tmp_path, "127.0.0.1:5000/coelho")
    head = pipeline.repo.head()
    instance.add_dynamic_partitions("source_commits", [head])
    job = pipeline.defs.resolve_job_def("deliver_commit")
    keys = []
    for attempt in range(1, MAX_DELIVERY_ATTEMPTS + 1):
        run = instance.create_run_for_job(job, tags={**SENSOR_TAGS, "coelho/source-sha": head,
                                                     "dagster/partition": head})
        instance.report_run_failed(run, "Run execution process for this run unexpectedly exited with code -9")
        tick = _tick(pipeline, head)
        if attempt < MAX_DELIVERY_ATTEMPTS:
            (request,) = _requests(tick)
            keys.append(request.run_key)
        else:
            assert not _requests(tick), "requested again past the bound"
    assert keys == [f"{head}@redelivery-{n}" for n in range(1, MAX_DELIVERY_ATTEMPTS)]


def test_a_new_commit_wins_over_redelivering_the_failed_one(git_server, instance, tmp_path) -> None:
    pipeline = _pipeline(git_server, instance, tmp_path, "127.0.0.1:5000/coelho")
    head = pipeline.repo.head()
    instance.add_dynamic_partitions("source_commits", [head])
    run = instance.create_run_for_job(pipeline.defs.resolve_job_def("deliver_commit"),
                                      tags={**SENSOR_TAGS, "coelho/source-sha": head})
    instance.report_run_failed(run)
    newer = pipeline.repo.push({"apps/fastapi/main.py": "print('newer')\n"}, "FastAPI: newer")

    (request,) = _requests(_tick(pipeline, head))

    assert request.partition_key == newer and request.run_key == newer


def test_a_queued_or_running_delivery_is_left_alone(git_server, instance, tmp_path) -> None:
    pipeline = _pipeline(git_server, instance, tmp_path, "127.0.0.1:5000/coelho")
    head = pipeline.repo.head()
    instance.add_dynamic_partitions("source_commits", [head])
    instance.create_run_for_job(pipeline.defs.resolve_job_def("deliver_commit"),
                                tags={**SENSOR_TAGS, "coelho/source-sha": head},
                                status=dg.DagsterRunStatus.STARTED)
    assert not _requests(_tick(pipeline, head))


def test_a_lost_run_that_dagster_is_about_to_retry_is_left_to_dagster(git_server, tmp_path) -> None:
    """With run retries on, Dagster tags a failed run `will_retry` a moment after its status turns FAILURE.
    A tick in between must not request the commit again: Dagster's retry and a redelivery would run the
    same delivery twice at once. Once Dagster has said no (retries used up), the sensor takes over."""
    retries = {"run_retries": {"enabled": True, "max_retries": 1}}
    with dg.instance_for_test(overrides=retries) as instance:
        pipeline = _pipeline(git_server, instance, tmp_path, "127.0.0.1:5000/coelho")
        head = pipeline.repo.head()
        instance.add_dynamic_partitions("source_commits", [head])
        job = pipeline.defs.resolve_job_def("deliver_commit")
        # The moment between the two writes: FAILURE with its reason, no will_retry tag yet.
        run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.FAILURE,
                                          tags={**SENSOR_TAGS, "coelho/source-sha": head, "dagster/partition": head,
                                                "dagster/failure_reason": "UNEXPECTED_TERMINATION"})
        assert WILL_RETRY_TAG not in instance.get_run_by_id(run.run_id).tags
        assert dagster_retries(instance, run)
        assert not _requests(_tick(pipeline, head))

        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})  # Dagster decided: not retried

        (request,) = _requests(_tick(pipeline, head))
        assert request.run_key == f"{head}@redelivery-1"
