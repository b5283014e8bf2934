"""coelho_pipeline/sqlite_storage.py: Dagster's sqlite storages keeping their engines, on real sqlite.

They are what dagster.yaml's instance stores in (it names no storage), in every process that builds
it from the ref; the run, schedule and index databases and a run's own keep a connection open, and
every write to a run's database reaches its file (the webserver watches it for new events); another
process reads and writes the same files meanwhile; a forked child lets go of the parent's
connections; nothing stays open after dispose or on a wiped file; what is remembered as existing is
only what was found.
"""

import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.storage.event_log.sqlite import sqlite_event_log

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


_OTHER_PROCESS = """
import sys
import dagster as dg
with dg.DagsterInstance.from_config(sys.argv[1]) as other:
    assert other.get_run_by_id(sys.argv[2]).status == dg.DagsterRunStatus.SUCCESS
    assert other.get_latest_materialization_event(dg.AssetKey("answer")).run_id == sys.argv[2]
    other.add_dynamic_partitions("source_commits", ["from-another-process"])
    other.report_engine_event("written by another process", other.get_run_by_id(sys.argv[2]))
"""


def _events_in_file(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The event types in a run's database file alone, as if its write-ahead log did not exist."""
    return [kind for kind, _ in _rows_in_file(instance, run_id)]


def _rows_in_file(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    path = instance.event_log_storage.path_for_shard(run_id)
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
        return list(conn.execute("SELECT dagster_event_type, event FROM event_logs ORDER BY id"))


def _materialize_answer(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    @dg.asset
    def answer() -> int:
        return 42

    result = dg.materialize([answer], instance=instance)
    assert result.success
    return result


def test_the_kept_connections_are_the_shared_databases_and_another_process_writes_meanwhile(
        instance: dg.DagsterInstance, dagster_home: Path) -> None:
    result = _materialize_answer(instance)
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert instance.get_latest_materialization_event(dg.AssetKey("answer")).run_id == result.run_id
    assert instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    open_names = {Path(p).name for p in _open_databases(dagster_home)}
    assert {"runs.db", "index.db"} <= open_names
    assert any(name.startswith(result.run_id) for name in open_names)  # a run's own database: kept too
    # ... and every write checkpointed into the file itself, where the webserver's watch sees it: read with
    # the write-ahead log ignored, the file holds the run's last event.
    assert _events_in_file(instance, result.run_id)[-1] == dg.DagsterEventType.RUN_SUCCESS.value

    # Another process reads what this one wrote and writes while this one holds its connections.
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(dagster_home), result.run_id],
                   check=True, timeout=120)
    assert instance.has_dynamic_partition("source_commits", "from-another-process")
    assert [e.message for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.message == "written by another process"]

    instance.schedule_storage.all_instigator_state()  # the schedule database too (Dagster's dispose skips it)
    assert "schedules.db" in {Path(p).name for p in _open_databases(dagster_home)}
    instance.dispose()
    assert _open_databases(dagster_home) == []


def test_a_watched_run_sees_the_events_another_instance_writes(instance: dg.DagsterInstance,
                                                               dagster_home: Path) -> None:
    # The webserver streams a run's log from its watch on the run's database file.
    run = instance.get_run_by_id(_materialize_answer(instance).run_id)
    seen: list[str] = []
    arrived = threading.Event()

    def on_event(entry, _cursor: str) -> None:  # noqa: ANN001  (Dagster's EventLogEntry)
        seen.append(entry.message)
        if entry.message == "from the writer":
            arrived.set()

    latest = instance.event_log_storage.get_records_for_run(run.run_id).cursor
    instance.watch_event_logs(run.run_id, latest, on_event)
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as writer:
            writer.report_engine_event("from the writer", run)
            assert arrived.wait(timeout=15), f"the watch saw {seen}"
    finally:
        instance.end_watch_event_logs(run.run_id, on_event)


def test_a_forked_child_lets_go_of_the_kept_connections(instance: dg.DagsterInstance) -> None:
    _materialize_answer(instance)
    engine = instance.run_storage._kept_engine  # noqa: SLF001
    assert engine.pool.checkedin() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no connection of the parent's, and its own work as usual
        try:
            ok = engine.pool.checkedin() == 0 and len(instance.get_runs()) == 1
        except BaseException:  # noqa: BLE001
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(instance.get_runs()) == 1 and engine.pool.checkedin() == 1  # the parent's still works


def test_a_wiped_event_log_keeps_no_connection_on_a_removed_file(instance: dg.DagsterInstance,
                                                                dagster_home: Path) -> None:
    run = instance.get_run_by_id(_materialize_answer(instance).run_id)
    instance.event_log_storage.wipe()
    assert not (dagster_home / "history" / "runs" / f"{run.run_id}.db").exists()
    assert not [p for p in _open_databases(dagster_home) if p.endswith("(deleted)")]
    instance.report_engine_event("after the wipe", run)
    assert [e.message for e in instance.all_logs(run.run_id)] == ["after the wipe"]


def test_a_write_a_read_in_progress_holds_back_still_reaches_the_watch(instance: dg.DagsterInstance,
                                                                       dagster_home: Path) -> None:
    # The webserver may be mid-read when the run writes its last event: the checkpoint cannot take it
    # into the file then, and no later write of the run will; the watch must see it all the same.
    run = instance.get_run_by_id(_materialize_answer(instance).run_id)
    path = instance.event_log_storage.path_for_shard(run.run_id)
    arrived = threading.Event()

    def on_event(entry, _cursor: str) -> None:  # noqa: ANN001  (Dagster's EventLogEntry)
        if entry.message == "the last event":
            arrived.set()

    with dg.DagsterInstance.from_config(str(dagster_home)) as webserver, \
            closing(sqlite3.connect(path)) as reading:
        webserver.watch_event_logs(run.run_id, webserver.event_log_storage.get_records_for_run(run.run_id).cursor,
                                   on_event)
        try:
            reading.execute("BEGIN")
            reading.execute("SELECT count(*) FROM event_logs").fetchone()  # a read in progress at this moment
            instance.report_engine_event("the last event", run)
            assert "the last event" not in _rows_in_file(instance, run.run_id)[-1][1]  # held back by the read
            assert arrived.wait(timeout=15), "the watch never saw the run's last event"
        finally:
            webserver.end_watch_event_logs(run.run_id, on_event)


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


def test_a_stamped_database_is_opened_without_reading_the_migration_scripts(
        instance: dg.DagsterInstance, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = instance.get_run_by_id(_materialize_answer(instance).run_id)
    checks: list[str] = []
    real_check = sqlite_event_log.check_alembic_revision
    monkeypatch.setattr(sqlite_event_log, "check_alembic_revision",
                        lambda config, conn: checks.append(str(conn.engine.url)) or real_check(config, conn))
    with dg.DagsterInstance.from_config(str(dagster_home)) as other:  # another process would do the same
        assert [e.message for e in other.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)]
        assert other.get_latest_materialization_event(dg.AssetKey("answer")).run_id == run.run_id
        assert checks == []  # the index and the run's database are stamped: nothing to create
        with other.event_log_storage.run_connection("a-new-run"):
            pass
        assert len(checks) == 1 and checks[0].endswith("a-new-run.db")  # a new one is made as by Dagster
        other.report_engine_event("in a new database", other.get_run_by_id(run.run_id))
    assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)


def test_a_database_another_process_holds_locked_while_creating_it_is_waited_for(
        instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stamp is read before Dagster's initialization, which retries while another process creates
    # the database; a locked database is left to that retry instead of failing the first read.
    monkeypatch.setattr(sqlite_event_log, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)
    storage = instance.event_log_storage
    path = Path(storage.path_for_shard("being-created"))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # as a process between its CREATE TABLEs and its stamp
    release = threading.Timer(1.5, holder.rollback)
    release.start()
    try:
        with storage.run_connection("being-created") as conn:
            conn.execute(db.text("SELECT 1"))
    finally:
        release.join()
        holder.close()
    reader = db.create_engine(f"sqlite:///{path}")
    try:
        with reader.connect() as conn:
            assert conn.execute(db.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        reader.dispose()
