"""coelho_pipeline/instance.py: the Dagster instance dagster.yaml names, on real sqlite storage.

It remembers a dynamic partition it has found so that a delivery asks the storage once, not once per
output and twice per input of every step; what it remembers must never outlive a deletion it made,
and never more than PARTITION_MEMORY_SECONDS one made elsewhere.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.instance import PARTITION_MEMORY_SECONDS, DeliveryInstance
from pipeline_harness import REPO_ROOT, Pipeline

PARTITIONS = "source_commits"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StorageQueries:
    """Counts the questions that reach the instance's event log storage (wraps the real method)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.count = 0
        storage = instance._event_storage  # noqa: SLF001  (the storage behind the instance is the subject)
        real = storage.has_dynamic_partition

        def counted(partitions_def_name: str, partition_key: str) -> bool:
            self.count += 1
            return real(partitions_def_name, partition_key)

        storage.has_dynamic_partition = counted


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
    assert type(dg.DagsterInstance.from_ref(instance.get_ref())) is DeliveryInstance


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
