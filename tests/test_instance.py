"""coelho_pipeline/instance.py: the Dagster instance dagster.yaml names, on real sqlite storage.

It remembers a dynamic partition it has found so that a delivery asks the storage once, not once per
output and twice per input of every step; what it remembers must never outlive a deletion it made,
and never more than PARTITION_MEMORY_SECONDS one made elsewhere.
"""

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import deserialize_value, serialize_value

from coelho_pipeline.instance import PARTITION_MEMORY_SECONDS, DeliveryInstance, share_instance
from pipeline_harness import REPO_ROOT, Pipeline

PARTITIONS = "source_commits"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StorageQueries:
    """Counts the partition questions that reach the instance's event log storage (wraps its real methods)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.count = 0
        storage = instance._event_storage  # noqa: SLF001  (the storage behind the instance is the subject)
        for name in ("has_dynamic_partition", "get_existing_dynamic_partitions"):
            setattr(storage, name, self._counted(getattr(storage, name)))

    def _counted(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.count += 1
            return real(*args)
        return counted


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[DeliveryInstance]:
    with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
        yield loaded


def test_dagster_yaml_names_it_and_a_run_worker_loads_it_from_the_ref(instance: dg.DagsterInstance) -> None:
    # A run worker (a new process for dagster dev, a pod in the cluster) builds its instance from the
    # ref the launcher passes it.
    assert type(instance) is DeliveryInstance
    ref = deserialize_value(serialize_value(instance.get_ref()), InstanceRef)
    assert type(dg.DagsterInstance.from_ref(ref)) is DeliveryInstance


def test_a_partition_found_is_asked_once_within_the_window(instance: DeliveryInstance) -> None:
    clock = instance.clock = Clock()
    instance.add_dynamic_partitions(PARTITIONS, ["abc"])
    queries = StorageQueries(instance)

    assert all(instance.has_dynamic_partition(PARTITIONS, "abc") for _ in range(50))
    assert queries.count == 1

    clock.now += PARTITION_MEMORY_SECONDS + 0.1
    assert instance.has_dynamic_partition(PARTITIONS, "abc")
    assert queries.count == 2


def test_a_missing_partition_is_not_remembered(dagster_home: Path, instance: DeliveryInstance) -> None:
    assert not instance.has_dynamic_partition(PARTITIONS, "new")
    with dg.DagsterInstance.from_config(str(dagster_home)) as elsewhere:
        elsewhere.add_dynamic_partitions(PARTITIONS, ["new"])
    assert instance.has_dynamic_partition(PARTITIONS, "new")


def test_a_partition_it_deletes_is_forgotten_at_once(instance: DeliveryInstance) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["abc"])
    assert instance.has_dynamic_partition(PARTITIONS, "abc")
    instance.delete_dynamic_partition(PARTITIONS, "abc")
    assert not instance.has_dynamic_partition(PARTITIONS, "abc")


def test_a_partition_deleted_elsewhere_is_believed_for_at_most_the_window(
        dagster_home: Path, instance: DeliveryInstance) -> None:
    clock = instance.clock = Clock()
    instance.add_dynamic_partitions(PARTITIONS, ["abc"])
    assert instance.has_dynamic_partition(PARTITIONS, "abc")
    with dg.DagsterInstance.from_config(str(dagster_home)) as elsewhere:
        elsewhere.delete_dynamic_partition(PARTITIONS, "abc")

    clock.now += PARTITION_MEMORY_SECONDS - 1
    assert instance.has_dynamic_partition(PARTITIONS, "abc")
    clock.now += 1.1
    assert not instance.has_dynamic_partition(PARTITIONS, "abc")


def test_many_keys_at_once_ask_only_for_the_ones_not_remembered(instance: DeliveryInstance) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["a", "b", "c"])
    assert instance.has_dynamic_partition(PARTITIONS, "a")
    queries = StorageQueries(instance)
    assert instance.get_existing_dynamic_partitions(PARTITIONS, ["a", "b", "x"]) == {"a", "b"}
    assert queries.count == 1  # b and x
    assert instance.get_existing_dynamic_partitions(PARTITIONS, ["a", "b"]) == {"a", "b"}
    assert queries.count == 1
    # Both ways of asking agree: a missing key is asked again each time.
    assert not instance.has_dynamic_partition(PARTITIONS, "x")
    assert queries.count == 2


def test_an_answer_read_while_it_deletes_the_partition_is_not_remembered(instance: DeliveryInstance) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["abc"])
    storage = instance._event_storage  # noqa: SLF001
    real = storage.get_existing_dynamic_partitions
    read, deleted = threading.Event(), threading.Event()

    def slow_read(partitions_def_name: str, partition_keys: Any) -> Any:
        answer = real(partitions_def_name, partition_keys)  # still there
        read.set()
        deleted.wait(10)
        return answer

    storage.get_existing_dynamic_partitions = slow_read
    answers: list[bool] = []
    asking = threading.Thread(target=lambda: answers.append(instance.has_dynamic_partition(PARTITIONS, "abc")))
    asking.start()
    assert read.wait(10)
    storage.get_existing_dynamic_partitions = real
    instance.delete_dynamic_partition(PARTITIONS, "abc")
    deleted.set()
    asking.join(10)

    assert answers == [True]  # true when it was read
    assert not instance.has_dynamic_partition(PARTITIONS, "abc")


@pytest.mark.docker
def test_a_delivery_asks_the_storage_for_its_partition_once(pipeline: Pipeline, instance: DeliveryInstance) -> None:
    # The pipeline fixture's settings (its registry, remote and engine) with dagster.yaml's instance.
    pipeline = Pipeline(pipeline.repo, pipeline.settings, instance)
    seed = pipeline.repo.head()
    instance.add_dynamic_partitions(PARTITIONS, [seed])
    asked = 0
    remembered = instance.has_dynamic_partition

    def counted(partitions_def_name: str, partition_key: str) -> bool:
        nonlocal asked
        asked += 1
        return remembered(partitions_def_name, partition_key)

    instance.has_dynamic_partition = counted
    queries = StorageQueries(instance)

    assert pipeline.deliver(seed).success
    # Dagster asked for each of the three apps' image outputs and helm_values' inputs; the storage
    # was asked once (twice if a slow run crossed the window).
    assert asked >= 9
    assert queries.count <= 2


def test_sensor_ticks_of_one_process_share_one_instance(instance: DeliveryInstance) -> None:
    # As a code server makes each tick's context: from the daemon's instance ref, a new one per tick.
    ref = instance.get_ref()
    contexts = [dg.SensorEvaluationContext(instance_ref=ref, last_tick_completion_time=None, last_run_key=None,
                                           cursor=None, repository_name=None) for _ in range(2)]
    with contexts[0] as first:
        shared = share_instance(first)
        assert first.instance is shared and isinstance(shared, DeliveryInstance) and shared is not instance
    with contexts[1] as second:
        assert share_instance(second) is shared and second.instance is shared
    # The tick's end did not dispose it: the next tick reads through it.
    assert shared.get_runs(limit=1) == []
    # A context made with an instance (a test, a direct call) keeps it.
    assert share_instance(dg.build_sensor_context(instance=instance)) is instance


def test_the_push_sensor_declares_no_resource_so_dagster_builds_no_instance_per_tick() -> None:
    # Dagster builds a new DagsterInstance for a tick as soon as it builds the resources a sensor
    # declares, before the sensor runs; the push sensor builds its git resource on the shared one.
    from pipeline_harness import git_push_sensor

    assert git_push_sensor.required_resource_keys == set()
