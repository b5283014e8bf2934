"""A private PostgreSQL server for the tests: Debian's postgresql package, a fresh cluster made with
initdb, listening on 127.0.0.1 and a unix socket in its own directory, password authentication
(scram-sha-256) everywhere. PostgreSQL refuses to run as root, so under root it runs as the
package's ``postgres`` user. Stopped by its PID (fast shutdown), its directory removed.

Passwords reach the server through a file (initdb) and SQL parameters, never an argument list.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from coelho_pipeline.dev.services import Service, ServiceError, wait_for

SUPERUSER = "coelho_admin"


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them off PATH, per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise ServiceError("PostgreSQL is not installed (apt-get install postgresql; scripts/test installs it)")
    return found[-1].parent


@dataclass
class PostgresServer:
    port: int
    password: str  # the superuser's
    directory: Path
    service: Service

    host = "127.0.0.1"

    def connect(self, database: str = "postgres", user: str = SUPERUSER,
                password: str | None = None) -> psycopg2.extensions.connection:
        """A psycopg2 connection (autocommit) to ``database``."""
        conn = psycopg2.connect(host=self.host, port=self.port, dbname=database, user=user,
                                password=password or self.password, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, name: str, *, owner: str, password: str) -> None:
        """A login role ``owner`` and a database ``name`` it owns."""
        # Not `with conn`: psycopg2 makes that a transaction, and CREATE DATABASE refuses to run in one.
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(owner)), (password,))
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        finally:
            conn.close()

    def connections_made(self, database: str) -> int:
        """Connections ever made to ``database``, as the server counts them (pg_stat_database.sessions)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,))
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def stop(self, timeout: float = 20) -> None:
        if self.service.process.poll() is None:
            # SIGINT: fast shutdown (clients are disconnected; SIGTERM would wait for them).
            self.service.process.send_signal(signal.SIGINT)
            try:
                self.service.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.service.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(port: int) -> PostgresServer:
    bin_dir = postgres_bin_dir()
    # Not under pytest's tmp directories: those are private to root, and the server runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="coelho-pg-"))
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(directory, "postgres", "postgres")
    password = secrets.token_hex(16)
    pwfile = directory / "pwfile"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if as_root:
        shutil.chown(pwfile, "postgres", "postgres")
    log_path = directory / "postgres.log"
    try:
        result = subprocess.run([str(bin_dir / "initdb"), "-D", str(directory / "data"), "-U", SUPERUSER,
                                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                                user=user, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {result.stderr.strip()}")
    finally:
        pwfile.unlink(missing_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    process = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(directory / "data"), "-k", str(directory), "-p", str(port),
         "-h", "127.0.0.1",
         "-c", "fsync=off",  # a test database: durability buys nothing here
         # A failed CREATE ROLE … PASSWORD would otherwise be logged with its statement, password included.
         "-c", "log_min_error_statement=panic"],
        user=user, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = PostgresServer(port=port, password=password, directory=directory,
                            service=Service("PostgreSQL", process, log_path))
    try:
        wait_for(lambda: server.connect().close() is None, timeout=60, what=f"PostgreSQL on 127.0.0.1:{port}",
                 service=server.service)
    except BaseException:
        server.stop()
        raise
    return server
