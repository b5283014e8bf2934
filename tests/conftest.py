"""Real services for the whole test session: a Docker engine, a registry and a git daemon on 127.0.0.1.

An engine that already answers (DOCKER_HOST or the default socket) is used as it is; otherwise a
private one is started for the session. Everything started here is stopped by PID at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import docker
import pytest

from coelho_pipeline.dev import services
from metrics_exporter import MetricsExporter
from postgres_server import PostgresServer, start_postgres

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASE_IMAGES = {"PYTHON_IMAGE": "coelho-base/python:3.11-slim", "NODE_IMAGE": "coelho-base/node:18-slim"}


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def docker_host(session_dir: Path) -> Iterator[str]:
    """DOCKER_HOST of a working engine; also exported so the docker SDK and CLI in subprocesses use it."""
    with services.docker_engine() as host:
        yield host


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_host, timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_images(docker_host: str) -> dict[str, str]:
    """Local stand-ins for python:3.11-slim and node:18-slim (no Docker Hub here)."""
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "base-images.sh")],
                            env={**os.environ, "DOCKER_HOST": docker_host}, capture_output=True, text=True)
    assert result.returncode == 0, f"scripts/base-images.sh failed:\n{result.stdout}\n{result.stderr}"
    return dict(BASE_IMAGES)


@pytest.fixture(scope="session")
def registry_addr(session_dir: Path) -> Iterator[str]:
    port = services.free_port()
    while port == 5000:  # the port values.yaml names: the tests must run with another one
        port = services.free_port()
    service = services.start_registry(session_dir / "registry", port)
    yield f"127.0.0.1:{port}"
    service.stop()


@dataclass
class GitServer:
    base: Path
    port: int

    def path(self, name: str) -> Path:
        return self.base / f"{name}.git"

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"


@pytest.fixture(scope="session")
def prometheus(session_dir: Path) -> Iterator[tuple[str, MetricsExporter]]:
    """A real Prometheus (Debian's package) on a free loopback port, scraping a small exporter every
    second; yields (its URL, the exporter whose gauges the test sets)."""
    with MetricsExporter() as exporter:
        port = services.free_port()
        service = services.start_prometheus(session_dir / "prometheus", port, [exporter.target])
        try:
            yield f"http://127.0.0.1:{port}", exporter
        finally:
            service.stop()


@pytest.fixture(scope="session")
def git_server(session_dir: Path) -> Iterator[GitServer]:
    port = services.free_port()
    base = session_dir / "git"
    service = services.start_git_daemon(base, port)
    yield GitServer(base, port)
    service.stop()


@pytest.fixture
def pipeline(tmp_path: Path, git_server: GitServer, registry_addr: str, base_images, docker_host):
    """The pipeline's Definitions aimed at a fresh source repo (fixture apps + this repo's k3d/), the
    session's registry and Docker engine, with a temporary persistent Dagster instance."""
    from pipeline_harness import Pipeline, make_source_repo, settings_for

    prefix = f"{registry_addr}/coelho"
    repo = make_source_repo(git_server)
    with dg.instance_for_test() as instance:
        yield Pipeline(repo, settings_for(repo, prefix, tmp_path / "work", base_images), instance)


@pytest.fixture
def argocd_for_repo(tmp_path: Path):
    """Factory: an Argo CD controller double serving the Application of k3d/argocd/application.yaml,
    pointed at a test source repository; returns (double, kubeconfig path). Stopped at teardown."""
    from argocd_double import ArgoCDControllerDouble, application_from_yaml

    started = []

    def start(repo, **options):
        double = ArgoCDControllerDouble(**options).start()
        started.append(double)
        application = application_from_yaml(REPO_ROOT / "k3d" / "argocd" / "application.yaml")
        application["spec"]["source"]["targetRevision"] = repo.branch  # the branch the pipeline writes
        double.create_application(application, repo_url=repo.url)
        return double, double.write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}")

    yield start
    for double in started:
        double.stop()
        assert not double.errors, f"the Argo CD double's controller failed: {double.errors}"


@pytest.fixture
def dagster_dev_env() -> dict[str, str]:
    """Extra environment for `dagster dev`; a test module overrides this fixture to change settings."""
    return {}


@pytest.fixture
def argocd_double_options() -> dict:
    """Options for the Argo CD controller double of `dagster_dev`; overridable per test module."""
    return {}


@pytest.fixture
def dagster_yaml() -> Path:
    """The dagster.yaml `dagster_dev` copies into its DAGSTER_HOME; a test module overrides it."""
    return REPO_ROOT / "dagster.yaml"


@pytest.fixture
def source_branch() -> str:
    """The branch of `dagster_dev`'s source repository (COELHO_GIT_BRANCH); overridable per module."""
    return "master"


@pytest.fixture
def before_dagster_dev() -> Callable[..., None]:
    """Called as f(repo, double, kubeconfig) once the source repo and the Argo CD double exist and
    before `dagster dev` starts (e.g. to prepare more of the API); overridable per module."""
    return lambda repo, double, kubeconfig: None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL (Debian's package) on a free loopback port, stopped by its PID at the end."""
    server = start_postgres(services.free_port())
    yield server
    server.stop()


@pytest.fixture
def postgres_env(postgres_server: PostgresServer) -> dict[str, str]:
    """A fresh database and login role on the session's PostgreSQL, as the DAGSTER_PG_* variables
    k3d/dagster/dagster.yaml reads."""
    name = f"coelho_{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(16)
    postgres_server.create_database(name, owner=name, password=password)
    return {"DAGSTER_PG_HOST": postgres_server.host, "DAGSTER_PG_PORT": str(postgres_server.port),
            "DAGSTER_PG_USERNAME": name, "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": name}


@pytest.fixture
def dagster_dev(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo,
                dagster_dev_env: dict[str, str], argocd_double_options: dict, dagster_yaml: Path,
                source_branch: str, before_dagster_dev: Callable[..., None]):
    """`dagster dev` (webserver + daemon; sqlite unless `dagster_yaml` says otherwise) watching a fresh
    source repo, with the Argo CD double; yields (repo, instance, double, port). Its registry is the
    session's, which values.yaml does not name."""
    from pipeline_harness import make_source_repo

    prefix = f"{registry_addr}/coelho"
    repo = make_source_repo(git_server, branch=source_branch)
    double, kubeconfig = argocd_for_repo(repo, **argocd_double_options)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(dagster_yaml, home / "dagster.yaml")
    before_dagster_dev(repo, double, kubeconfig)
    port = services.free_port()
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "DOCKER_HOST": docker_host,
        "COELHO_GIT_URL": repo.url, "COELHO_GIT_BRANCH": repo.branch, "COELHO_REGISTRY": prefix,
        "COELHO_BUILD_NETWORK": "host",
        "COELHO_BUILD_ARGS": " ".join(f"{k}={v}" for k, v in base_images.items()),
        "COELHO_APPS": "fastapi,kafka_producers,sveltekit", "COELHO_WORKDIR": str(tmp_path / "work"),
        "KUBECONFIG": str(kubeconfig), "COELHO_SYNC_TIMEOUT": "60", "COELHO_VERIFY_SOAK_SECONDS": "1",
        "COELHO_VERIFY_INTERVAL_SECONDS": "0.25", "COELHO_ROLLOUT_TIMEOUT": "20", **dagster_dev_env,
    }
    service = services.start_dagster_dev(project_dir=REPO_ROOT, env=env, port=port, log_path=tmp_path / "dagster.log")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield repo, instance, double, port
    finally:
        started = time.monotonic()
        service.stop(timeout=30)
    # Dagster shut itself down on SIGTERM (a SIGKILL after the timeout would show as -9).
    assert service.process.returncode == 0, f"dagster dev exited with {service.process.returncode}"
    assert time.monotonic() - started < 30


