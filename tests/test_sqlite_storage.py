"""coelho_pipeline/sqlite_storage.py: Dagster's sqlite storages keeping their engines, on real sqlite.

They are what dagster.yaml's instance stores in (it names no storage), in every process that builds it
from the ref; a kept engine holds no sqlite connection between calls (another process writes freely);
what is remembered as existing is only what was found.
"""

import os
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db

from coelho_pipeline import sqlite_storage
from test_instance import dagster_home, instance  # noqa: F401  (the same fixtures)


def _open_databases(directory: Path) -> list[str]:
    """The sqlite files under ``directory`` this process has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and ".db" in target:
            found.append(target)
    return found


def test_the_instance_of_dagster_yaml_and_of_its_ref_store_in_them(instance: dg.DagsterInstance) -> None:
    for built in (instance, dg.DagsterInstance.from_ref(instance.get_ref())):
        assert isinstance(built.run_storage, sqlite_storage.SqliteRunStorage)
        assert isinstance(built.event_log_storage, sqlite_storage.SqliteEventLogStorage)
        assert isinstance(built.schedule_storage, sqlite_storage.SqliteScheduleStorage)


def test_a_run_and_its_events_written_and_read_back_leave_no_connection_open(
        instance: dg.DagsterInstance, dagster_home: Path) -> None:
    @dg.asset
    def answer() -> int:
        return 42

    result = dg.materialize([answer], instance=instance)
    assert result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert instance.get_latest_materialization_event(dg.AssetKey("answer")).run_id == result.run_id
    assert instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    # The engines are kept, the connections are not: another process may write (and a file be removed).
    assert _open_databases(dagster_home) == []
    # A second instance over the same files (another process would do the same) sees it all.
    with dg.DagsterInstance.from_config(str(dagster_home)) as other:
        assert other.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        other.add_dynamic_partitions("source_commits", ["abc"])
    assert instance.has_dynamic_partition("source_commits", "abc")


def test_a_table_is_remembered_once_found_and_asked_again_until_then(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    assert storage.has_table("event_logs")
    assert not storage.has_table("coelho_later")
    with storage.index_connection() as conn:
        conn.execute(db.text("CREATE TABLE coelho_later (x INTEGER)"))
    assert storage.has_table("coelho_later")
    with storage.index_connection() as conn:
        conn.execute(db.text("DROP TABLE coelho_later"))
    assert storage.has_table("coelho_later")  # remembered: Dagster never drops a table under a running process


def test_the_event_log_keeps_a_bounded_number_of_shard_engines(instance: dg.DagsterInstance,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_storage, "KEPT_SHARD_ENGINES", 3)
    storage = instance.event_log_storage
    for run in range(5):
        with storage.run_connection(f"run{run}") as conn:
            conn.execute(db.text("SELECT 1"))
    with storage.run_connection("run2"):
        pass
    assert list(storage._shard_engines) == ["run3", "run4", "run2"]  # noqa: SLF001  (least recently used go first)
