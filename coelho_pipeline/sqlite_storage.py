"""Dagster's sqlite storages (``dagster dev``'s default), each keeping its SQLAlchemy engines.

Dagster's sqlite storages make a new engine for every call (the event log for every event written,
the run and schedule storages for every read and write), and with it a new sqlite connection: a new
engine costs its dialect's first-connect setup and an empty compiled-statement cache, and closing a
database's last connection checkpoints its write-ahead log into the file and deletes it. Kept here:
one engine per database, and for the run and schedule databases and the event log's index one open
connection too (more while threads ask at once; closed on dispose). A run's own event database keeps
its connection as well, but every call that wrote to it ends with a checkpoint: the webserver learns
of a run's new events from changes to that file (its watchdog), and a write only reaches the file,
out of the write-ahead log, at a checkpoint (Dagster's closing the connection after every call made
one, and reopened it for the next: ~2 ms more per event, a run writes ~60). When a read in progress
holds the checkpoint back, the file's modification time is set instead, which the watch sees as
well; the reader's next read finds the events in the write-ahead log. Other processes keep reading
and writing the same files (sqlite's write-ahead log is made for it). Measured: keeping the engines
took ~0.55 s off ~2.7 s of overhead of one delivery in process (benchmarks/bench_delivery.py);
keeping the connections took the daemon's idle CPU from 4.14 to 2.90 CPU s over 120 s (its sensor
and queue loops read these databases many times a second; benchmarks/run_all.py --only P6). Also
remembered: that a table exists (asked for every asset check event written, and for every sensor and
schedule state read, by reflecting the database's tables) and that a data migration is complete
(asked around many reads and writes): neither is undone under a running Dagster, so each is asked
until true.

``DeliveryInstance.config_defaults`` names ``SqliteStorage``, so it is the storage whenever
dagster.yaml names none. Only Dagster, SQLAlchemy and alembic are imported here (every Dagster process loads it).
"""

import os
import sqlite3
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from alembic.runtime.migration import MigrationContext
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.runs.sqlite import sqlite_run_storage
from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# Engines the event log keeps, each with its open connection (three files: the database, its write-ahead
# log and shared memory): one per shard (the index, one database per run); the least recently used beyond
# this many are let go, so a long-lived webserver does not keep one for every run ever made.
KEPT_SHARD_ENGINES = 32


# Every engine that keeps a connection: a forked child lets go of them without closing the parent's.
_KEEPING: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _forget_connections_in_child() -> None:
    for engine in list(_KEEPING):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_in_child)


def keeping_engine(conn_string: str, **connect_args: Any) -> Engine:
    """An engine that keeps one sqlite connection open between calls (a thread asking while it is in
    use gets one of its own, closed when returned); any thread may use the kept one, one at a time."""
    engine = create_engine(conn_string, poolclass=QueuePool, pool_size=1, max_overflow=-1,
                           connect_args={"check_same_thread": False, **connect_args})
    _KEEPING.add(engine)
    return engine


class _Found:
    """What a storage has found to exist (a table, a completed data migration): it stays so."""

    def __init__(self) -> None:
        self._found: set[str] = set()

    def __call__(self, name: str, ask: Callable[[], bool]) -> bool:
        if name not in self._found and ask():
            self._found.add(name)
        return name in self._found


class _KeptEngine:
    """For a storage over one database (runs, schedules): ``connect`` on an engine kept for it."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._kept_engine = keeping_engine(conn_string)
        self._found = _Found()
        super().__init__(conn_string, inst_data)  # type: ignore[call-arg]  (the storage it is mixed into)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Mapping[str, str]) -> Any:
        return cls.from_local(inst_data=inst_data, **config_value)  # type: ignore[attr-defined]

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._kept_engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]  (the storage it is mixed into)
        self._kept_engine.dispose()


class SqliteRunStorage(_KeptEngine, sqlite_run_storage.SqliteRunStorage):
    def has_built_index(self, migration_name: str) -> bool:
        return self._found(f"index:{migration_name}", lambda: super(SqliteRunStorage, self).has_built_index(migration_name))


class SqliteScheduleStorage(_KeptEngine, sqlite_schedule_storage.SqliteScheduleStorage):
    def has_instigators_table(self) -> bool:
        return self._found("table:instigators", super().has_instigators_table)

    def _has_instigators_table(self, conn: Connection) -> bool:
        return self._found("table:instigators", lambda: super(SqliteScheduleStorage, self)._has_instigators_table(conn))

    def has_built_index(self, migration_name: str) -> bool:
        return self._found(f"index:{migration_name}",
                           lambda: super(SqliteScheduleStorage, self).has_built_index(migration_name))


class SqliteEventLogStorage(sqlite_event_log.SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._shard_engines: OrderedDict[str, Engine] = OrderedDict()
        self._found = _Found()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,  # type: ignore[override]
                          config_value: Mapping[str, str]) -> "SqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def _shard_engine(self, shard: str) -> Engine:
        # Called under Dagster's _db_lock (see _connect): one thread at a time.
        engine = self._shard_engines.get(shard)
        if engine is None:
            conn_string = self.conn_string_for_shard(shard)
            timeout = {"timeout": sqlite_event_log.SQLITE_BUSY_TIMEOUT_SECONDS}
            engine = keeping_engine(conn_string, **timeout)
            self._shard_engines[shard] = engine
            if len(self._shard_engines) > KEPT_SHARD_ENGINES:
                self._shard_engines.popitem(last=False)[1].dispose()
        else:
            self._shard_engines.move_to_end(shard)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As Dagster's: one call at a time per storage, and a shard's database made on its first use.
        with self._db_lock:
            engine = self._shard_engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                driver = conn.connection.dbapi_connection
                changes = driver.total_changes
                with conn.begin():
                    yield conn
                if shard != sqlite_event_log.INDEX_SHARD_NAME and driver.total_changes != changes:
                    self._mark_written(shard, driver)

    def _mark_written(self, shard: str, driver: sqlite3.Connection) -> None:
        """Makes a run's database file change after a write (see the module's docstring)."""
        try:
            # PASSIVE: a reader in the middle of a query is not waited for, it holds back what it needs.
            busy, logged, moved = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            complete = not busy and 0 <= moved == logged
        except sqlite3.Error:  # the events are committed: a checkpoint that cannot run only delays the file
            complete = False
        if not complete:
            with suppress(OSError):
                os.utime(self.path_for_shard(shard))

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        # Dagster's reads the newest revision from its migration scripts (parsing every one, ~45 ms, in
        # each process for each database it first touches: a run's worker twice) only to do nothing when
        # the database is stamped with a revision: so the database is asked first.
        try:
            with engine.connect() as conn:
                if MigrationContext.configure(conn).get_current_revision():
                    return
        except (sqlalchemy_exc.DatabaseError, sqlite3.DatabaseError):
            pass  # e.g. locked by another process creating it: Dagster's own initialization waits and retries
        super()._initdb(engine, for_index_shard=for_index_shard)

    def has_table(self, table_name: str) -> bool:
        return self._found(f"table:{table_name}", lambda: super(SqliteEventLogStorage, self).has_table(table_name))

    def wipe(self) -> None:
        # Dagster's deletes every run's files: a connection kept to one would go on writing to the deleted file.
        with self._db_lock:
            self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            self._dispose_engines()

    def _dispose_engines(self) -> None:
        while self._shard_engines:
            self._shard_engines.popitem()[1].dispose()

    def has_secondary_index(self, name: str) -> bool:
        return self._found(f"index:{name}", lambda: super(SqliteEventLogStorage, self).has_secondary_index(name))


class SqliteStorage(DagsterSqliteStorage):
    """DagsterSqliteStorage (``storage: sqlite``) over the storages above; configured the same way."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = SqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)  # not DagsterSqliteStorage's, which builds Dagster's storages

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,  # type: ignore[override]
                          config_value: Mapping[str, str]) -> "SqliteStorage":
        return cls.from_local(inst_data=inst_data, **config_value)
