"""Dagster's sqlite storages (``dagster dev``'s default), each keeping its SQLAlchemy engines.

Dagster's sqlite storages make a new engine for every call: the event log for every event written,
the run and schedule storages for every read and write. With NullPool an engine holds no
connection, so keeping one changes nothing about connections (each call still opens its own
sqlite connection and closes it); what a new engine costs is its dialect's first-connect setup and
an empty compiled-statement cache, so every statement was compiled again. In one delivery in
process (benchmarks/bench_delivery.py) keeping them took ~0.55 s off ~2.7 s of overhead. Also
remembered: that a table exists (asked for every asset check event written, and for every sensor
and schedule state read, by reflecting the database's tables) and that a data migration is complete
(asked around many reads and writes): neither is undone under a running Dagster, so each is asked
until true.

``DeliveryInstance.config_defaults`` names ``SqliteStorage``, so it is the storage whenever
dagster.yaml names none. Only Dagster and SQLAlchemy are imported here (every Dagster process loads it).
"""

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Engines the event log keeps: one per shard (the index, one database per run); the least recently
# used beyond this many are let go, so a long-lived webserver does not keep one for every run ever made.
KEPT_SHARD_ENGINES = 64


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
        self._kept_engine = create_engine(conn_string, poolclass=NullPool)
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
            engine = self._shard_engines[shard] = create_engine(
                self.conn_string_for_shard(shard), poolclass=NullPool,
                connect_args={"timeout": sqlite_event_log.SQLITE_BUSY_TIMEOUT_SECONDS})
            if len(self._shard_engines) > KEPT_SHARD_ENGINES:
                self._shard_engines.popitem(last=False)
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
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        return self._found(f"table:{table_name}", lambda: super(SqliteEventLogStorage, self).has_table(table_name))

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
