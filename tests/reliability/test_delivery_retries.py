"""Transient vs terminal reaches Dagster: a registry that is down for a moment is retried by the
declared RetryPolicy; bad input fails at once, in one attempt."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.errors import RETRY_POLICY
from pipeline_harness import Pipeline, make_source_repo, materializations, settings_for

pytestmark = pytest.mark.docker


def step_starts(instance: dg.DagsterInstance, run_id: str, step: str) -> int:
    """Attempts of ``step``: its first start and every restart after a retry."""
    return sum(1 for e in instance.all_logs(run_id)
               if e.dagster_event and e.dagster_event.event_type_value in ("STEP_START", "STEP_RESTARTED")
               and e.step_key == step)


def test_a_registry_that_comes_up_late_is_retried_and_the_delivery_lands(
        tmp_path: Path, git_server, base_images, docker_host) -> None:
    port = services.free_port()
    prefix = f"127.0.0.1:{port}/late"
    repo = make_source_repo(git_server)
    started: list[services.Service] = []
    with dg.instance_for_test() as instance:
        done = threading.Event()

        def start_registry_after_the_first_failure() -> None:
            # Down at the first attempt; up from the step's first retry on (the policy allows three).
            while not done.wait(0.1):
                if instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.STEP_UP_FOR_RETRY), limit=1):
                    started.append(services.start_registry(tmp_path / "registry", port))
                    return

        pipeline = Pipeline(repo, settings_for(repo, prefix, tmp_path / "work", base_images), instance)
        seed = repo.head()
        instance.add_dynamic_partitions("source_commits", [seed])
        job = pipeline.defs.resolve_job_def("deliver_commit")
        watcher = threading.Thread(target=start_registry_after_the_first_failure)
        watcher.start()
        try:
            result = job.execute_in_process(partition_key=seed, instance=instance, raise_on_error=False)
        finally:
            done.set()
            watcher.join()
            for service in started:
                service.stop()

        assert result.success
        assert 2 <= step_starts(instance, result.run_id, "images") <= 1 + RETRY_POLICY.max_retries
        retried = [e for e in instance.all_logs(result.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retried
        error, chain = retried[0].dagster_event.event_specific_data.error, []
        while error is not None:
            chain.append(error.message)
            error = error.cause
        assert any("unreachable" in m or "did not answer" in m or "refused" in m for m in chain), chain
        assert materializations(result)["manifest_commit"]["created"] is True


def test_a_terminal_failure_is_not_retried(pipeline: Pipeline) -> None:
    values = (pipeline.repo.clone / "k3d/helm/values.yaml").read_text()
    head = pipeline.repo.push({"k3d/helm/values.yaml": values.replace("  image:\n    repository: 127.0.0.1:5000/"
                                                                      "coelho/fastapi\n", "  image: {}\n", 1)},
                              "Drop the FastAPI image block")

    result = pipeline.deliver(head)

    assert not result.success
    assert step_starts(pipeline.instance, result.run_id, "source_commit") == 1
    failure = result.failure_data_for_node("source_commit")
    assert failure.user_failure_data.metadata["transient"].value is False
