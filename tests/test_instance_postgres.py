"""coelho_pipeline/instance.py on the cluster's storage: the instance of k3d/dagster/dagster.yaml
against a real PostgreSQL (Debian's, password authentication), a database and role of the test's own.

Dagster's PostgreSQL storages open a connection for every call; DeliveryInstance keeps a few per
storage. Counted by the server itself (pg_stat_database.sessions: connections ever made to the
database, pg_stat_activity: the ones open now), read over a superuser connection to another database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from cluster_harness import cluster_instance, write_instance
from coelho_pipeline.instance import KEPT_CONNECTIONS, DeliveryInstance
from postgres_server import PostgresServer

STORAGES = 3  # run, event log, schedule: an engine each


class Database:
    """What the PostgreSQL server says of one database's connections."""

    def __init__(self, server: PostgresServer, name: str) -> None:
        self.server, self.name = server, name
        self._conn = server.connect("postgres")

    def _one(self, query: str) -> int:
        with self._conn.cursor() as cur:
            cur.execute(query, {"db": self.name})
            return cur.fetchone()[0]

    def sessions(self) -> int:
        return self.server.connections_made(self.name)

    def open_connections(self, at_most: int, timeout: float = 10) -> int:
        """The connections open now, once they are ``at_most`` or fewer (or after ``timeout``): a
        backend whose client closed the connection is still listed for a moment while it exits."""
        deadline = time.monotonic() + timeout
        while ((count := self._one("SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s")) > at_most
               and time.monotonic() < deadline):
            time.sleep(0.05)
        return count

    def cut_connections(self) -> int:
        """Terminate every open connection to the database (as a restart or a failover would)."""
        return self._one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %(db)s")

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def database(postgres_server: PostgresServer, postgres_env: dict[str, str]) -> Iterator[Database]:
    db = Database(postgres_server, postgres_env["DAGSTER_PG_DB"])
    yield db
    db.close()


@pytest.fixture
def cluster_home(tmp_path: Path, postgres_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A DAGSTER_HOME holding the cluster's dagster.yaml (plus ``settings``) on the test's database."""
    for key, value in postgres_env.items():
        monkeypatch.setenv(key, value)

    def make(**settings: object) -> Path:
        write_instance(tmp_path / "home" / "dagster.yaml",
                       {**cluster_instance(tmp_path / "image", run_launcher=False), **settings})
        return tmp_path / "home"
    return make


def some_calls(instance: dg.DagsterInstance, n: int) -> None:
    """``n`` rounds of calls on all three storages, as a delivery and the daemon make them."""
    for i in range(n):
        instance.add_dynamic_partitions("source_commits", [f"commit-{i}"])
        instance.get_runs(limit=5)
        instance.all_instigator_state()


def test_the_cluster_instance_keeps_its_connections_between_calls(
        cluster_home: Callable[..., Path], database: Database) -> None:
    home = cluster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, DeliveryInstance)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        before = database.sessions()
        some_calls(instance, 20)
        assert database.sessions() - before <= STORAGES * KEPT_CONNECTIONS  # 60 calls
        assert 0 < database.open_connections(at_most=STORAGES * KEPT_CONNECTIONS) <= STORAGES * KEPT_CONNECTIONS
        assert instance.get_dynamic_partitions("source_commits")[-1] == "commit-19"
    # Disposed (as every Dagster process disposes the instances it builds): nothing left open.
    assert database.open_connections(at_most=0) == 0


def test_after_dispose_a_call_keeps_nothing_open(cluster_home: Callable[..., Path], database: Database) -> None:
    instance = dg.DagsterInstance.from_config(str(cluster_home()))
    some_calls(instance, 1)
    instance.dispose()
    assert database.open_connections(at_most=0) == 0
    # Used after dispose (a thread still running, a shutdown race): Dagster's own engine again.
    some_calls(instance, 1)
    assert database.open_connections(at_most=0) == 0
    instance.dispose()


def dsn_of_a_kept_connection(instance: dg.DagsterInstance) -> dict[str, str]:
    connection = instance.run_storage._engine.raw_connection()  # noqa: SLF001  (what libpq was asked for)
    try:
        return connection.dbapi_connection.get_dsn_parameters()
    finally:
        connection.close()


def test_kept_connections_use_tcp_keepalives_unless_the_database_params_say_otherwise(
        cluster_home: Callable[..., Path]) -> None:
    home = cluster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dsn = dsn_of_a_kept_connection(instance)
        assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["keepalives_count"]) == ("1", "60", "3")

    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"]["params"] = {"keepalives_idle": "120"}
    write_instance(home / "dagster.yaml", config)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dsn = dsn_of_a_kept_connection(instance)
        assert (dsn["keepalives_idle"], dsn["keepalives_interval"]) == ("120", "10")


def test_keep_database_connections_false_is_a_connection_per_call(
        cluster_home: Callable[..., Path], database: Database) -> None:
    home = cluster_home(keep_database_connections=False)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, DeliveryInstance)
        before = database.sessions()
        some_calls(instance, 20)
        assert database.sessions() - before >= 60
        assert database.open_connections(at_most=0) == 0


def test_connections_cut_by_the_server_are_replaced_without_a_failed_call(
        cluster_home: Callable[..., Path], database: Database) -> None:
    home = cluster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        some_calls(instance, 2)
        assert database.cut_connections() > 0
        # Each storage's next call finds its kept connection dead, and reconnects before using it.
        some_calls(instance, 2)
        assert set(instance.get_dynamic_partitions("source_commits")) == {"commit-0", "commit-1"}


def test_threads_asking_at_once_all_get_a_connection(
        cluster_home: Callable[..., Path], database: Database) -> None:
    home = cluster_home()
    errors: list[BaseException] = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        def ask() -> None:
            try:
                for _ in range(5):
                    instance.get_runs(limit=1)
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        threads = [threading.Thread(target=ask) for _ in range(4 * KEPT_CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert not any(t.is_alive() for t in threads)
        # What was opened beyond the kept ones was closed when given back.
        assert database.open_connections(at_most=STORAGES * KEPT_CONNECTIONS) <= STORAGES * KEPT_CONNECTIONS
    assert database.open_connections(at_most=0) == 0


def test_the_webserver_pool_replaces_the_kept_connections(
        cluster_home: Callable[..., Path], database: Database) -> None:
    home = cluster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        some_calls(instance, 2)
        assert database.open_connections(at_most=STORAGES * KEPT_CONNECTIONS) > 0
        # What dagster-webserver calls at start: its own pools, so the ones kept here are closed.
        instance.optimize_for_webserver(statement_timeout=15000, pool_recycle=3600, max_overflow=20)
        assert database.open_connections(at_most=0) == 0
        some_calls(instance, 1)


def test_a_sqlite_instance_is_unchanged(tmp_path: Path) -> None:
    from pipeline_harness import REPO_ROOT

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, DeliveryInstance)
        assert instance._storages_keeping_connections == []  # noqa: SLF001
        some_calls(instance, 1)

