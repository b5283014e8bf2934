"""Bad input gets one clear failure that names what is at fault, and nothing is built or committed."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from coelho_pipeline.delivery.values_file import VALUES_MAX_BYTES
from coelho_pipeline.dev import services
from pipeline_harness import Pipeline, materializations

pytestmark = pytest.mark.docker

VALUES = "k3d/helm/values.yaml"


def failure_message(result: dg.ExecuteInProcessResult, step: str) -> str:
    return result.failure_data_for_node(step).error.message


def nothing_happened(pipeline: Pipeline, result: dg.ExecuteInProcessResult, head: str) -> None:
    assert not result.success
    assert not [k for k in materializations(result) if k.startswith("image/") or k == "manifest_commit"]
    assert pipeline.repo.head() == head


def test_an_app_tag_that_other_keys_alias_is_refused_naming_them(pipeline: Pipeline) -> None:
    values = (pipeline.repo.clone / VALUES).read_text()
    values = values.replace('    tag: ""\n', '    tag: &fastapiTag ""\n', 1)  # the first app block is fastapi
    values += "\nmirror:\n  image:\n    tag: *fastapiTag\n"
    head = pipeline.repo.push({VALUES: values}, "Alias the FastAPI tag")

    result = pipeline.deliver(head)

    nothing_happened(pipeline, result, head)
    message = failure_message(result, "source_commit")
    assert "fastapi.image.tag is anchored and aliased by mirror.image.tag" in message


def test_a_values_file_over_the_size_limit_is_refused(pipeline: Pipeline) -> None:
    values = (pipeline.repo.clone / VALUES).read_text()
    padding = "# " + "x" * 1000 + "\n"
    head = pipeline.repo.push({VALUES: values + padding * (VALUES_MAX_BYTES // len(padding) + 1)}, "Huge values")

    result = pipeline.deliver(head)

    nothing_happened(pipeline, result, head)
    message = failure_message(result, "source_commit")
    assert VALUES in message and str(VALUES_MAX_BYTES) in message and head in message


def test_a_values_file_that_is_not_utf8_is_refused_naming_file_and_commit(pipeline: Pipeline) -> None:
    path = pipeline.repo.clone / VALUES
    path.write_bytes(path.read_bytes().replace(b"# Written by coelho-pipeline", b"# Written by \xe9 pipeline", 1))
    head = pipeline.repo.push({}, "Latin-1 comment")

    result = pipeline.deliver(head)

    nothing_happened(pipeline, result, head)
    message = failure_message(result, "source_commit")
    assert VALUES in message and head in message and "UTF-8" in message


def test_a_symlink_that_leaves_the_chart_directory_fails_the_render_check(pipeline: Pipeline) -> None:
    assert pipeline.deliver(pipeline.repo.head()).success
    clone = pipeline.repo.clone
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=clone)
    os.symlink("../../../../etc/passwd", clone / "k3d/helm/files/spark/passwd")
    head = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "A link out of the chart")

    result = pipeline.deliver(head)

    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "chart_renders_with_built_images")
    problems = evaluation.metadata["problems"].value
    assert "k3d/helm/files/spark/passwd is a link to ../../../../etc/passwd, outside the chart" in problems
    assert pipeline.repo.head() == head


def test_a_partition_that_is_not_a_full_sha_fails_once_saying_how_to_remove_it(pipeline: Pipeline) -> None:
    short = pipeline.repo.head()[:12]
    pipeline.instance.add_dynamic_partitions("source_commits", [short])

    result = pipeline.deliver(short)

    nothing_happened(pipeline, result, pipeline.repo.head())
    message = failure_message(result, "source_commit")
    assert f"partition {short!r} of source_commits is not a full 40-hex commit SHA" in message
    assert "delete_dynamic_partition('source_commits'" in message
    # No retry of a terminal failure: the step ran once.
    attempts = [e for e in pipeline.instance.all_logs(result.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
                and e.step_key == "source_commit"]
    assert len(attempts) == 1
    # Once removed, nothing of it is left red: no check was ever evaluated for it.
    pipeline.instance.delete_dynamic_partition("source_commits", short)
    assert short not in pipeline.instance.get_dynamic_partitions("source_commits")
    assert not result.get_asset_check_evaluations()


def test_deliver_commit_launched_without_a_partition_fails_clearly(pipeline: Pipeline) -> None:
    job = pipeline.defs.resolve_job_def("deliver_commit")

    result = job.execute_in_process(instance=pipeline.instance, raise_on_error=False)

    nothing_happened(pipeline, result, pipeline.repo.head())
    assert "deliver_commit was launched without a partition" in failure_message(result, "source_commit")
    assert "partition selector" in failure_message(result, "source_commit")
