"""Local stand-ins for the services the pipeline talks to, for the dev loop and the tests.

A Docker engine (started only when none answers), a registry (Debian's docker-registry, i.e.
distribution), a ``git daemon`` serving bare repositories and Prometheus, all bound to 127.0.0.1. Every
process is started in its own process group and stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import requests
from docker.errors import DockerException


class ServiceError(RuntimeError):
    """A local service did not start; the message points at its log."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the service (it stops its own children), then SIGKILL to whatever of its process
        group (it leads one: start_new_session) is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(5)
        # Children that outlived their leader (run workers, containerd) are in the same group.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service and service.process.poll() is not None:
            raise ServiceError(f"{what}: process exited with {service.process.returncode}, see {service.log_path}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet, whatever the client says
            pass
        time.sleep(0.2)
    raise ServiceError(f"{what} not ready after {timeout:.0f}s" + (f", see {service.log_path}" if service else ""))


def _spawn(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
           cwd: Path | None = None) -> Service:
    if shutil.which(argv[0]) is None:
        raise ServiceError(f"{argv[0]} is not installed (needed for the {name})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    log.close()
    return Service(name, process, log_path)


def engine_answers(docker_host: str | None = None) -> bool:
    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except DockerException:
        return False


def start_dockerd(state_dir: Path) -> tuple[Service, str]:
    """A private Docker engine on its own socket; no bridge, no iptables changes (loopback only)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    sock = state_dir / "docker.sock"
    host = f"unix://{sock}"
    service = _spawn("Docker engine", [
        "dockerd", "--data-root", str(state_dir / "root"), "--exec-root", str(state_dir / "exec"),
        "--pidfile", str(state_dir / "dockerd.pid"), "-H", host,
        "--bridge=none", "--iptables=false", "--ip-masq=false",
    ], state_dir / "dockerd.log")
    wait_for(lambda: engine_answers(host), timeout=60, what="Docker engine", service=service)
    return service, host


@contextmanager
def docker_engine(log: Callable[[str], None] = lambda _message: None) -> Iterator[str]:
    """DOCKER_HOST of an engine that answers: the configured one (DOCKER_HOST or the default socket),
    or a private dockerd started here, exported as DOCKER_HOST meanwhile and stopped by its PID after."""
    existing = os.environ.get("DOCKER_HOST")
    if engine_answers(existing):
        log(f"Docker engine: {existing or 'the default socket'} answers, using it")
        yield existing or "unix:///var/run/docker.sock"
        return
    if shutil.which("dockerd") is None:
        raise ServiceError("no Docker engine answers and dockerd is not installed (apt-get install docker.io)")
    # A short path: unix socket paths are limited to 108 bytes.
    state = Path("/tmp") / f"coelho-dockerd-{uuid.uuid4().hex[:8]}"
    log(f"Docker engine: none answers, starting dockerd in {state}")
    service, host = start_dockerd(state)
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        log(f"Docker engine: stopping dockerd (PID {service.pid})")
        service.stop()
        if existing is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = existing
        netns = state / "exec" / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], check=False, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)  # gigabytes of layers: not left behind per run


def start_registry(state_dir: Path, port: int) -> Service:
    """Distribution (Debian's docker-registry) on 127.0.0.1:port with filesystem storage."""
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {state_dir / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    service = _spawn("registry", ["docker-registry", "serve", str(config)], state_dir / "registry.log")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200,
             timeout=30, what=f"registry on 127.0.0.1:{port}", service=service)
    return service


def start_git_daemon(base_path: Path, port: int) -> Service:
    """``git daemon`` exporting every bare repo under ``base_path``, with push enabled."""
    base_path.mkdir(parents=True, exist_ok=True)
    service = _spawn("git daemon", [
        "git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", f"--base-path={base_path}",
        "--export-all", "--enable=receive-pack", "--informative-errors", str(base_path),
    ], base_path.parent / f"git-daemon-{port}.log")

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_for(listening, timeout=15, what=f"git daemon on 127.0.0.1:{port}", service=service)
    return service


def start_prometheus(state_dir: Path, port: int, targets: Iterable[str], *, scrape_interval: str = "1s") -> Service:
    """Prometheus (Debian's package) on 127.0.0.1:port scraping ``targets`` (host:port, /metrics)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    config.write_text(f"global: {{scrape_interval: {scrape_interval}, evaluation_interval: {scrape_interval}}}\n"
                      f"scrape_configs:\n  - job_name: app\n    static_configs: [{{targets: [{listed}]}}]\n")
    service = _spawn("Prometheus", [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={state_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], state_dir / "prometheus.log")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok,
             timeout=30, what=f"Prometheus on 127.0.0.1:{port}", service=service)
    return service


def start_dagster_dev(*, project_dir: Path, env: Mapping[str, str], port: int, log_path: Path) -> Service:
    """`dagster dev` (webserver, daemon, code server) for ``project_dir``'s workspace.yaml on 127.0.0.1."""
    # Dagster stops its own processes with SIGINT. A shell's background job inherits SIGINT ignored
    # (and exec keeps it ignored), which would leave `dagster dev` deaf to SIGTERM: spawn with the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        service = _spawn("dagster dev", [
            sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port),
        ], log_path, env=env, cwd=project_dir)
    finally:
        signal.signal(signal.SIGINT, previous)
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok,
             timeout=120, what="Dagster UI", service=service)
    return service


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **(env or {})},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout.strip()


def seed_remote(bare: Path, sources: Iterable[tuple[Path, Iterable[str]]], *, branch: str = "master",
                rewrite: Callable[[Path], None] | None = None, author: str = "COELHO Developer",
                email: str = "dev@coelho-realtime.local") -> str:
    """Creates ``bare`` with one commit of the given (root, paths) pairs copied in; returns its SHA.

    Only files Git tracks (or would track: .gitignore is honoured) are copied, so build outputs and
    local venvs never reach the remote.
    """
    work = bare.parent / (bare.name.removesuffix(".git") + "-seed")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for source_root, include in sources:
        files = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *include,
                    cwd=source_root).split("\0")
        for rel in filter(None, files):
            src = source_root / rel
            if src.is_file():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, work / rel)
    if rewrite:
        rewrite(work)
    ident = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email,
             "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": email}
    git("init", "-q", "-b", branch, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "Import COELHO RealTime apps and deployment", cwd=work, env=ident)
    git("init", "-q", "--bare", "-b", branch, str(bare), cwd=work)
    git("push", "-q", str(bare), f"{branch}:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)
