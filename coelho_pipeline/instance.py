"""The Dagster instance of coelho-pipeline's processes (dagster.yaml: ``instance_class``).

A delivery is one run of one dynamic partition (the source commit), and Dagster asks the instance
whether that partition exists for every output and input of every step: 54 storage queries in a
3-app delivery, more with each app, each on a new connection (5 ms on sqlite, 30 ms on PostgreSQL),
for an answer that does not change during the run. This instance remembers a partition it has
found for a short while. A partition it deletes itself is forgotten at once; one deleted by another
process (the UI, ``dagster instance``) may still be believed here for at most
``PARTITION_MEMORY_SECONDS``; a partition that does not exist is never remembered, so a new one is
seen as soon as it is added. That window matters only in the long-lived processes (the daemon, and
the code server, whose sensor ticks share one instance, see below): a sensor request for a partition
deleted elsewhere seconds before is not added again by the daemon (nor refused by the promotion
sensor's tick), and its run fails saying the partition does not exist; a delivery whose partition
is deleted while it runs finishes.

On PostgreSQL (the cluster's storage), Dagster's storages open a new connection for every call, so
that the short-lived instances a code server builds per sensor tick never accumulate connections.
With password authentication that is ~30 ms a call, and a delivery makes well over a hundred calls.
This instance keeps up to ``KEPT_CONNECTIONS`` connections per storage instead: a kept one is checked
before each use (a database restart or failover costs a reconnect, not a failed call; Dagster
retries the connect) and has TCP keepalives (an idle one dropped by the network is noticed), threads
asking at once still get one each, and all of them are closed when the instance is disposed (every
Dagster process disposes the instances it builds; a storage used after that gets Dagster's engine
back). ``keep_database_connections: false`` in dagster.yaml gives Dagster's own behaviour back
(e.g. behind a connection pooler).

A code server evaluates each sensor tick with a new context whose ``instance`` is a new
DagsterInstance built from the daemon's instance ref: its storages check their schema revision
(alembic parses Dagster's 267 migration scripts, ~80 ms of CPU, once per storage and event-log
shard) and, on PostgreSQL, connect anew; it is built as soon as the sensor reads its resources.
The pipeline's sensors call ``share_instance`` first instead: one instance per ref and process,
shared by its ticks (as a webserver shares one) and disposed when the process exits.

Only Dagster (and its SQLAlchemy) is imported here: every Dagster process loading the instance
(webserver, daemon, code server, run worker) imports this module.
"""

import atexit
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import AbstractSet, Any

from dagster import Bool, DagsterInstance, Field, SensorEvaluationContext
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

PARTITION_MEMORY_SECONDS = 30.0
MAX_REMEMBERED_PARTITIONS = 1024
KEPT_CONNECTIONS = 2  # per PostgreSQL storage (run, event log, schedule): the daemon's threads share them
KEPT_CONNECTION_RECYCLE_SECONDS = 3600  # as dagster-webserver's pool
# libpq's TCP keepalives (unless the database's params set them): a kept connection sits idle, and a
# network that drops idle flows without a reset would otherwise leave its next use blocked for minutes.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10, "keepalives_count": 3}
# Instances share_instance keeps per process: one ref in practice (the daemon's, the webserver's for
# a "Test sensor"); another appears only if the daemon restarts on a changed dagster.yaml while this
# code server lives on.
MAX_SHARED_INSTANCES = 4
# coelho_pipeline/sqlite_storage.py's classes for Dagster's sqlite defaults (InstanceRef.config_defaults).
SQLITE_STORAGES = {"storage": "SqliteStorage", "run_storage": "SqliteRunStorage",
                   "event_log_storage": "SqliteEventLogStorage", "schedule_storage": "SqliteScheduleStorage"}


class DeliveryInstance(DagsterInstance):
    """A DagsterInstance that remembers, for ``PARTITION_MEMORY_SECONDS``, a dynamic partition it found."""

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, *args: Any, keep_database_connections: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._storages_keeping_connections: list[Any] = []
        if keep_database_connections:
            for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
                if _is_postgres(storage):
                    _keep_connections(storage)
                    self._storages_keeping_connections.append(storage)
        self._partitions_found: dict[tuple[str, str], float] = {}
        # Bumped before and after each deletion made here: an answer read from the storage while a
        # deletion was under way is not remembered, so a deleted partition is never believed again.
        self._partition_deletions = 0
        self._partitions_lock = threading.Lock()

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        return {"keep_database_connections": Field(
            Bool, is_required=False, default_value=True,
            description="PostgreSQL storages keep their connections between calls (coelho_pipeline/instance.py).")}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        # Where dagster.yaml names no storage: Dagster's sqlite storages, keeping their engines.
        defaults = dict(InstanceRef.config_defaults(base_dir))
        for key in ("storage", "run_storage", "event_log_storage", "schedule_storage"):
            dagster_default = defaults[key]
            defaults[key] = ConfigurableClassData("coelho_pipeline.sqlite_storage", SQLITE_STORAGES[key],
                                                  dagster_default.config_yaml)
        return defaults

    def dispose(self) -> None:
        try:
            super().dispose()
            if self._schedule_storage is not None:  # Dagster disposes the run and event storages only
                self._schedule_storage.dispose()
        finally:
            self._close_kept_connections()

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        # dagster-webserver gives each storage a pool of its own: ours would be left open.
        self._close_kept_connections()
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)

    def _close_kept_connections(self) -> None:
        # Each storage gets Dagster's own engine back, so a call made after dispose keeps nothing open.
        storages, self._storages_keeping_connections = self._storages_keeping_connections, []
        for storage in storages:
            _stop_keeping_connections(storage)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in self.get_existing_dynamic_partitions(partitions_def_name, [partition_key])

    def get_existing_dynamic_partitions(self, partitions_def_name: str,
                                        partition_keys: Sequence[str]) -> AbstractSet[str]:
        now = self.clock()
        with self._partitions_lock:
            remembered = {key for key in partition_keys
                          if now - self._partitions_found.get((partitions_def_name, key), -math.inf)
                          < PARTITION_MEMORY_SECONDS}
            deletions = self._partition_deletions
        unknown = [key for key in partition_keys if key not in remembered]
        if not unknown:
            return remembered
        found = set(super().get_existing_dynamic_partitions(partitions_def_name, unknown))
        self._remember(partitions_def_name, found, now, deletions)
        return remembered | found

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._forget(partitions_def_name, partition_key)
        try:
            super().delete_dynamic_partition(partitions_def_name, partition_key)
        finally:
            self._forget(partitions_def_name, partition_key)

    def _remember(self, partitions_def_name: str, keys: AbstractSet[str], asked_at: float, deletions: int) -> None:
        with self._partitions_lock:
            if deletions != self._partition_deletions:
                return
            if len(self._partitions_found) >= MAX_REMEMBERED_PARTITIONS:  # long-lived processes
                self._partitions_found = {k: t for k, t in self._partitions_found.items()
                                          if asked_at - t < PARTITION_MEMORY_SECONDS}
            for key in keys:
                self._partitions_found[(partitions_def_name, key)] = asked_at

    def _forget(self, partitions_def_name: str, partition_key: str) -> None:
        with self._partitions_lock:
            self._partition_deletions += 1
            self._partitions_found.pop((partitions_def_name, partition_key), None)


def _is_postgres(storage: object) -> bool:
    return storage is not None and type(storage).__module__.startswith("dagster_postgres.")


def _postgres_engine(storage: Any, **pool_settings: Any) -> Engine:
    """An engine like the one a dagster-postgres storage makes itself (its URL and token provider, autocommit)."""
    from dagster_postgres.utils import create_pg_engine  # installed wherever a postgres storage loaded

    return create_pg_engine(storage.postgres_url, storage._token_provider,  # noqa: SLF001  (Dagster set pinned)
                            isolation_level="AUTOCOMMIT", **pool_settings)


def _keep_connections(storage: Any) -> None:
    """Give a dagster-postgres storage an engine that keeps its connections (Dagster's: NullPool)."""
    # max_overflow -1: threads asking at once each get a connection, as before.
    asked = make_url(storage.postgres_url).query
    engine = _postgres_engine(storage, pool_size=KEPT_CONNECTIONS, max_overflow=-1,
                              pool_recycle=KEPT_CONNECTION_RECYCLE_SECONDS, pool_pre_ping=True,
                              connect_args={k: v for k, v in KEEPALIVES.items() if k not in asked})
    _replace_engine(storage, engine)


def _stop_keeping_connections(storage: Any) -> None:
    _replace_engine(storage, _postgres_engine(storage, poolclass=NullPool))


def _replace_engine(storage: Any, engine: Engine) -> None:
    # The storage's engine attribute (dagster-postgres pinned; tests/test_instance_postgres.py).
    previous, storage._engine = storage._engine, engine  # noqa: SLF001
    previous.dispose()


_shared_instances: OrderedDict[str, DagsterInstance] = OrderedDict()
_shared_instances_lock = threading.Lock()


def share_instance(context: SensorEvaluationContext) -> DagsterInstance:
    """The instance this process shares for the tick's instance ref, made the tick's ``context.instance``.

    Call it before anything reads ``context.instance`` or ``context.log`` (either builds the tick's
    own instance). Dagster also builds one to give a sensor the resources it declares, before the
    sensor's function runs: a sensor that shares the instance builds its resources with
    ``coelho_pipeline.resources.sensor_resources`` instead. A context built with an instance (a
    test, a direct call) keeps it.
    """
    ref = context.instance_ref
    if ref is None or context._instance is not None:  # noqa: SLF001
        return context.instance
    key = serialize_value(ref)
    evicted = None
    with _shared_instances_lock:
        instance = _shared_instances.get(key)
        if instance is not None:
            _shared_instances.move_to_end(key)
        else:
            if len(_shared_instances) >= MAX_SHARED_INSTANCES:
                # The least recently used ref is a daemon's that is gone; a tick still reading it finds
                # its storages usable after dispose (they are given Dagster's engines back).
                _, evicted = _shared_instances.popitem(last=False)
            instance = _shared_instances[key] = DagsterInstance.from_ref(ref)
    if evicted is not None:
        evicted.dispose()
    # Not entered in the context's exit stack, so the tick's end does not dispose it. (The context's
    # attribute: the Dagster set is pinned; tests/test_cluster_postgres.py counts the connections.)
    context._instance = instance  # noqa: SLF001
    return instance


@atexit.register
def _dispose_shared_instances() -> None:
    with _shared_instances_lock:
        instances = list(_shared_instances.values())
        _shared_instances.clear()
    for instance in instances:
        instance.dispose()
