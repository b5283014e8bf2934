"""The real parts the daemon benchmarks (bench_daemon.py) run against, and what they read back.

``Stack``: the Docker engine check, a registry and a ``git daemon`` on free 127.0.0.1 ports and a
temporary directory. ``DaemonSession``: one ``dagster dev`` (webserver + daemon + code server, sqlite)
with the environment the ``dagster_dev`` fixture of tests/conftest.py builds, watching one source
repository, with the Argo CD controller double (tests/argocd_double.py) made instant. ``Webhook``: the
``coelho webhook`` receiver, when it exists. Every process started here is stopped by its PID.

Figures are read from where the pipeline leaves its traces: the run's event log (RUN_START,
RUN_SUCCESS, steps, materializations), the sensor's ticks, Git, and the double's own event list
(when the Application became Synced+Healthy at a revision).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (REPO_ROOT / "tests", REPO_ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import dagster as dg
import docker
import requests
from argocd_double import (
    DEFAULT_IMAGE_VALUES,
    ArgoCDControllerDouble,
    application_from_yaml,
)
from cluster_harness import write_instance
from conftest import BASE_IMAGES, GitServer
from pipeline_harness import DEV, SourceRepo

from coelho_pipeline.dev import services

SENSOR = "git_push_sensor"
SHA_TAG = "coelho/source-sha"
PIPELINE_SUBJECT = "Update image tags to "
_T0 = time.monotonic()
# Wall clock minus monotonic clock: the double stamps its events with time.monotonic().
_MONO_TO_WALL = time.time() - time.monotonic()


def log(message: str) -> None:
    print(f"[bench_daemon {time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark could not measure something; the message says what and where to look."""


# -- the services -------------------------------------------------------------------------------

class Stack:
    """Engine check, registry, git daemon and a temporary directory, for every session of one run."""

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="coelho-bench-daemon-"))
        self.started: list[services.Service] = []
        self.docker_host = ""
        self.client: docker.DockerClient | None = None
        self.registry_port = 0
        self.prefix = ""
        self.git: GitServer | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        host = os.environ.get("DOCKER_HOST")
        if not services.engine_answers(host):
            raise BenchError(f"no Docker engine answers at {host or 'the default socket (DOCKER_HOST is unset)'}: "
                             "set DOCKER_HOST to a running engine (e.g. unix:///tmp/coelho-shared/docker.sock)")
        self.docker_host = host or "unix:///var/run/docker.sock"
        self.client = docker.DockerClient(base_url=self.docker_host, timeout=600)
        for image in BASE_IMAGES.values():
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                raise BenchError(f"{image} is missing on {self.docker_host}: run "
                                 f"DOCKER_HOST={self.docker_host} scripts/base-images.sh") from None
        self.registry_port = services.free_port()
        while self.registry_port == 5000:  # the port values.yaml names: the pipeline must rewrite it
            self.registry_port = services.free_port()
        self.started.append(services.start_registry(self.tmp / "registry", self.registry_port))
        self.prefix = f"127.0.0.1:{self.registry_port}/coelho"
        git_port = services.free_port()
        self.started.append(services.start_git_daemon(self.tmp / "git", git_port))
        self.git = GitServer(self.tmp / "git", git_port)
        log(f"registry on 127.0.0.1:{self.registry_port}, git daemon on 127.0.0.1:{git_port}, "
            f"engine {self.docker_host}, work dir {self.tmp}")

    def service_pids(self) -> list[int]:
        return [s.pid for s in self.started if s.process.poll() is None]

    def close(self) -> None:
        if self.client is not None and self.registry_port:
            # Only tags under this run's own registry (a port nobody else used meanwhile) are removed.
            mine = f"127.0.0.1:{self.registry_port}/"
            try:
                for image in self.client.images.list():
                    for tag in image.tags:
                        if tag.startswith(mine):
                            try:
                                self.client.images.remove(tag)
                            except docker.errors.APIError:
                                pass
            except docker.errors.DockerException as e:
                log(f"could not clean up this run's image tags: {e}")
        for service in reversed(self.started):
            service.stop()
        self.started.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def push_change(repo: SourceRepo, files: Mapping[str, str], message: str) -> tuple[str, float]:
    """Commits ``files`` on top of the remote branch and pushes; (new SHA, wall time the push returned).

    A push the remote refuses because the pipeline's own commit landed meanwhile is rebased and
    pushed again, as a developer would.
    """
    services.git("pull", "-q", "--ff-only", "origin", repo.branch, cwd=repo.clone)
    repo.commit(files, message)
    for attempt in range(10):
        result = subprocess.run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{repo.branch}"], cwd=repo.clone,
                                capture_output=True, text=True, check=False)
        pushed_at = time.time()
        if result.returncode == 0:
            return services.git("rev-parse", "HEAD", cwd=repo.clone), pushed_at
        if attempt == 9:
            raise BenchError(f"git push kept being refused: {result.stderr.strip()}")
        services.git("pull", "-q", "--rebase", "origin", repo.branch, cwd=repo.clone, env=DEV)
    raise AssertionError("unreachable")


# -- process tree CPU ---------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime+cutime+cstime in seconds) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    ppid = int(fields[1])
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ppid, ticks / _CLK_TCK


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st:
                children.setdefault(st[0], []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


_ROLES = (("dagster._daemon run", "daemon"), ("dagster_webserver", "webserver"), ("dagster dev", "dagster dev"),
          ("code-server start", "code-server proxy"), ("api grpc", "code server"), ("execute_run", "run worker"),
          ("api execute", "run worker"), ("resource_tracker", "mp resource tracker"))


def process_role(pid: int) -> str:
    """What a process of the dagster dev tree is, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    line = " ".join(a.decode(errors="replace") for a in argv if a)
    for needle, role in _ROLES:
        if needle in line:
            return role
    return Path(argv[0].decode(errors="replace")).name if argv and argv[0] else "?"


def tree_cpu_by_process(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far incl. reaped children) for the tree under ``root``."""
    out = {}
    for pid in process_tree(root):
        st = _stat(pid)
        if st:
            out[pid] = (process_role(pid), st[1])
    return out


def tree_cpu_seconds(roots: Iterable[int]) -> tuple[float, int]:
    """CPU seconds used so far by the trees under ``roots`` and the processes in them.

    Each process counts its own utime+stime and its reaped children's (cutime+cstime), so a child
    that ran and ended between two samples (a git ls-remote, a run worker) is counted in its parent.
    """
    total, count = 0.0, 0
    for root in roots:
        for pid in process_tree(root):
            st = _stat(pid)
            if st:
                total += st[1]
                count += 1
    return total, count


@dataclass(frozen=True)
class TreeCpuWindow:
    """The CPU a process tree used over a window of wall time, by process role."""

    t0: float
    t1: float
    before: dict[int, tuple[str, float]]
    after: dict[int, tuple[str, float]]
    # pid -> CPU seconds of each run worker seen in the window, at its last sample.
    workers: dict[int, float]

    @classmethod
    def measure(cls, root: int, seconds: float) -> TreeCpuWindow:
        t0 = time.time()
        before = tree_cpu_by_process(root)
        # Sampled each second: a run worker (a scheduled drift check) ends inside the window and its CPU
        # lands in the code server's cutime; the last sample of it says roughly how much it was.
        workers: dict[int, float] = {}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            for pid, (role, cpu) in tree_cpu_by_process(root).items():
                if role == "run worker":
                    workers[pid] = cpu - before.get(pid, (role, 0.0))[1]
        return cls(t0=t0, t1=time.time(), before=before, after=tree_cpu_by_process(root), workers=workers)

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    @property
    def used(self) -> float:
        # A process that ended in the window was reaped by its parent, whose cutime now holds its CPU.
        return sum(c for _, c in self.after.values()) - sum(c for _, c in self.before.values())

    @property
    def percent(self) -> float:
        return 100 * self.used / self.wall

    @property
    def processes(self) -> tuple[int, int]:
        return len(self.before), len(self.after)

    def roles(self) -> str:
        """``role CPU-seconds, ...``, the most first."""
        by_role: dict[str, float] = {}
        for pid, (role, cpu) in self.after.items():
            by_role[role] = by_role.get(role, 0.0) + cpu - self.before.get(pid, (role, 0.0))[1]
        return ", ".join(f"{role} {cpu:.2f}" for role, cpu in sorted(by_role.items(), key=lambda x: -x[1]))


# -- one dagster dev ----------------------------------------------------------------------------

@dataclass
class Delivery:
    """One deliver_commit run as its event log, the sensor and the double saw it; wall-clock seconds."""

    sha: str
    pushed_at: float
    run_id: str
    status: str
    created: float
    enqueued: float | None
    starting: float | None
    start: float
    end: float
    steps: dict[str, float]
    first_step_start: float | None
    last_step_end: float | None
    tick_at: float | None  # start of the sensor tick that requested the run
    manifest: str | None
    synced_at: float | None  # the double: Synced+Healthy at the manifest commit
    rebuilt: set[str] = field(default_factory=set)
    failure: str = ""
    converge: float | None = None  # argocd_sync's own figure: sync requested -> Synced+Healthy read

    @property
    def delivery(self) -> float:
        return self.end - self.start

    @property
    def to_start(self) -> float:
        return self.start - self.pushed_at

    @property
    def to_created(self) -> float:
        return self.created - self.pushed_at

    @property
    def to_synced(self) -> float | None:
        return None if self.synced_at is None else self.synced_at - self.pushed_at

    def phases(self) -> dict[str, float]:
        """Where the time between the push and RUN_SUCCESS went."""
        out: dict[str, float] = {}
        if self.tick_at is not None:
            out["push -> sensor tick"] = self.tick_at - self.pushed_at
            out["tick -> run created"] = self.created - self.tick_at
        else:
            out["push -> run created"] = self.created - self.pushed_at
        if self.starting is not None:
            out["created -> RUN_STARTING (queue)"] = self.starting - self.created
            out["RUN_STARTING -> RUN_START (worker boot)"] = self.start - self.starting
        else:
            out["created -> RUN_START"] = self.start - self.created
        if self.first_step_start is not None and self.last_step_end is not None:
            out["RUN_START -> first step"] = self.first_step_start - self.start
            for key, seconds in self.steps.items():
                out[f"step {key}"] = seconds
            if self.converge is not None:
                out["argocd_sync waiting for Synced+Healthy"] = self.converge
            out["between steps"] = (self.last_step_end - self.first_step_start) - sum(self.steps.values())
            out["last step -> RUN_SUCCESS"] = self.end - self.last_step_end
        return out


def _shown(setting: tuple[str, str]) -> str:
    """``NAME=value`` for the log, the value of a credential left out."""
    name, value = setting
    return f"{name}=(set)" if any(w in name for w in ("PASSWORD", "SECRET", "TOKEN")) else f"{name}={value}"


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def graphql(port: int, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The answer of the Dagster webserver on 127.0.0.1:``port`` to ``query``."""
    answer = requests.post(f"http://127.0.0.1:{port}/graphql",
                           json={"query": query, "variables": dict(variables or {})}, timeout=60).json()
    if answer.get("errors"):
        raise BenchError(f"GraphQL: {answer['errors']}")
    return answer["data"]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def wait_location_loaded(port: int, name: str, log_path: Path, timeout: float = 180) -> None:
    """Until the webserver on ``port`` has loaded its code location; a load error is raised."""
    query = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            entries = graphql(port, query)["workspaceOrError"].get("locationEntries") or []
        except (requests.RequestException, BenchError, ValueError):
            entries = []
        for entry in entries:
            if entry["loadStatus"] == "LOADED":
                error = entry.get("locationOrLoadError") or {}
                if error.get("__typename") == "PythonError":
                    raise BenchError(f"{name}: the code location {entry['name']} did not load: "
                                     f"{error.get('message', '').strip()}")
                if error.get("__typename") == "RepositoryLocation":
                    return
        time.sleep(0.5)
    raise BenchError(f"{name}: the code location did not load in {timeout:.0f} s; see {log_path}:\n"
                     f"{log_tail(log_path)}")


class DaemonSession:
    """``dagster dev`` watching ``repo``, with the Argo CD double; the env of the ``dagster_dev`` fixture."""

    def __init__(self, stack: Stack, name: str, repo: SourceRepo, *, apps: Iterable[str],
                 env: Mapping[str, str] | None = None, image_values: Mapping[str, str] | None = None,
                 verify_soak: float = 0.0, instance_config: Mapping[str, Any] | None = None) -> None:
        self.stack, self.name, self.repo = stack, name, repo
        self.apps = tuple(apps)
        self.extra_env = dict(env or {})
        self.image_values = {**DEFAULT_IMAGE_VALUES, **(image_values or {})}
        self.verify_soak = verify_soak
        # The dagster.yaml to run with (default: the repository's); its variables come from ``env``.
        self.instance_config = instance_config
        self.dir = stack.tmp / name
        self.port = 0
        self.double: ArgoCDControllerDouble | None = None
        self.service: services.Service | None = None
        self.instance: dg.DagsterInstance | None = None
        self.env: dict[str, str] = {}

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        # "Instant" Argo CD: no sync or rollout delay; what remains is the pipeline's own waiting.
        self.double = ArgoCDControllerDouble(image_values=self.image_values, sync_delay=0.0, health_delay=0.0)
        self.double.start()
        self.double.create_application(application_from_yaml(REPO_ROOT / "k3d" / "argocd" / "application.yaml"),
                                       repo_url=self.repo.url)
        kubeconfig = self.double.write_kubeconfig(self.dir / "kubeconfig")
        home = self.dir / "dagster_home"
        home.mkdir()
        if self.instance_config is None:
            shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        else:
            write_instance(home / "dagster.yaml", dict(self.instance_config))
        self.port = services.free_port()
        self.env = {
            **os.environ, "DAGSTER_HOME": str(home), "DOCKER_HOST": self.stack.docker_host,
            "COELHO_GIT_URL": self.repo.url, "COELHO_REGISTRY": self.stack.prefix, "COELHO_BUILD_NETWORK": "host",
            "COELHO_BUILD_ARGS": " ".join(f"{k}={v}" for k, v in BASE_IMAGES.items()),
            "COELHO_APPS": ",".join(self.apps), "COELHO_WORKDIR": str(self.dir / "work"),
            "KUBECONFIG": str(kubeconfig), "COELHO_SYNC_TIMEOUT": "60",
            "COELHO_VERIFY_SOAK_SECONDS": f"{self.verify_soak:g}",
            "COELHO_VERIFY_INTERVAL_SECONDS": "0.25", "COELHO_ROLLOUT_TIMEOUT": "20", **self.extra_env,
        }
        log(f"{self.name}: starting dagster dev on 127.0.0.1:{self.port} "
            f"({len(self.apps)} apps{', ' + ' '.join(map(_shown, self.extra_env.items())) if self.extra_env else ''})")
        started = time.monotonic()
        self.service = services.start_dagster_dev(project_dir=REPO_ROOT, env=self.env, port=self.port,
                                                  log_path=self.dir / "dagster.log")
        self._wait_location_loaded()
        log(f"{self.name}: dagster dev up in {time.monotonic() - started:.1f} s (pid {self.service.pid})")
        # This process reads the instance too: its variables (a database's) for the time of the load.
        saved = {k: os.environ.get(k) for k in self.extra_env}
        os.environ.update(self.extra_env)
        try:
            self.instance = dg.DagsterInstance.from_config(str(home))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.dispose()
            self.instance = None
        if self.service is not None:
            self.service.stop(timeout=30)
            if self.service.process.returncode not in (0, None):
                log(f"{self.name}: dagster dev exited with {self.service.process.returncode}")
            self.service = None
        if self.double is not None:
            if self.double.errors:
                log(f"{self.name}: the Argo CD double's controller failed: {self.double.errors}")
            self.double.stop()
            self.double = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "dagster.log", lines)

    # -- GraphQL ---------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.port, query, variables)

    def _wait_location_loaded(self) -> None:
        wait_location_loaded(self.port, self.name, self.dir / "dagster.log")

    def sensor_interval(self) -> int | None:
        """minimum_interval_seconds of the push sensor as the webserver reports it."""
        query = """query S($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
                     __typename ... on Sensor { minIntervalSeconds } } }"""
        try:
            data = self.graphql(query, {"s": {"repositoryLocationName": "coelho", "repositoryName": "__repository__",
                                              "sensorName": SENSOR}})["sensorOrError"]
        except (requests.RequestException, BenchError, ValueError):
            return None
        return data.get("minIntervalSeconds")

    # -- what the instance says ------------------------------------------------------------

    @property
    def inst(self) -> dg.DagsterInstance:
        assert self.instance is not None
        return self.instance

    def pids(self) -> list[int]:
        return process_tree(self.service.pid) if self.service else []

    def tree_cpu(self) -> tuple[float, int]:
        assert self.service is not None
        return tree_cpu_seconds([self.service.pid])

    def sensor_state(self):
        states = [s for s in self.inst.all_instigator_state() if s.name == SENSOR]
        return states[0] if states else None

    def sensor_cursor(self) -> str | None:
        state = self.sensor_state()
        return state.instigator_data.cursor if state and state.instigator_data else None

    def ticks(self, after: float, before: float | None = None) -> list:
        state = self.sensor_state()
        if state is None:
            return []
        return list(self.inst.get_ticks(state.instigator_origin_id, state.selector_id, after=after, before=before))

    def wait_cursor(self, sha: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.sensor_cursor() != sha:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: the sensor's cursor never reached {sha[:12]} "
                                 f"(it is {str(self.sensor_cursor())[:12]})")
            time.sleep(0.5)

    def runs(self, **filters: Any) -> list[dg.DagsterRun]:
        return list(self.inst.get_runs(filters=dg.RunsFilter(**filters)))

    def wait_run(self, sha: str, timeout: float = 300, poll: float = 0.25) -> dg.DagsterRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(tags={SHA_TAG: sha})
            if runs and runs[0].is_finished:
                return runs[0]
            time.sleep(poll)
        raise BenchError(f"{self.name}: no finished deliver_commit run for {sha[:12]} after {timeout:.0f} s; "
                         f"see {self.dir / 'dagster.log'}")

    def delivery(self, sha: str, pushed_at: float, *, timeout: float = 300) -> Delivery:
        """Waits for the run of ``sha`` and reads it back; a failed run raises with its error."""
        run = self.wait_run(sha, timeout)
        d = self.read_delivery(run.run_id, sha, pushed_at)
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise BenchError(f"{self.name}: the delivery of {sha[:12]} ended {run.status.value} "
                             f"(run {run.run_id}): {d.failure or 'see the run log'}")
        return d

    def read_delivery(self, run_id: str, sha: str, pushed_at: float) -> Delivery:
        T = dg.DagsterEventType
        record = self.inst.get_run_records(dg.RunsFilter(run_ids=[run_id]))[0]
        stamps: dict[str, float] = {}
        step_start: dict[str, float] = {}
        steps: dict[str, float] = {}
        first = last = None
        metadata: dict[str, dict[str, Any]] = {}
        failure = ""
        for entry in self.inst.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind, at = event.event_type, entry.timestamp
            if kind in (T.RUN_ENQUEUED, T.RUN_STARTING, T.RUN_START, T.RUN_SUCCESS, T.RUN_FAILURE, T.RUN_CANCELED):
                stamps.setdefault(kind.value, at)
            elif kind == T.STEP_START:
                step_start[event.step_key] = at
                first = at if first is None else min(first, at)
            elif kind == T.STEP_SUCCESS:
                steps[event.step_key] = at - step_start.get(event.step_key, at)
                last = at if last is None else max(last, at)
            elif kind == T.STEP_FAILURE and not failure:
                err = getattr(event.event_specific_data, "error", None)
                failure = f"step {event.step_key}: {getattr(err, 'message', '') or event.message or ''}".strip()
            elif kind == T.ASSET_MATERIALIZATION:
                mat = event.event_specific_data.materialization
                metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
        start = stamps.get(T.RUN_START.value)
        end = stamps.get(T.RUN_SUCCESS.value) or stamps.get(T.RUN_FAILURE.value) or stamps.get(T.RUN_CANCELED.value)
        created = _timestamp(record.create_timestamp)
        manifest = (metadata.get("argocd_sync") or {}).get("revision") or (metadata.get("manifest_commit") or {}).get("commit")
        rebuilt = {k.split("/", 1)[1] for k, md in metadata.items() if k.startswith("image/") and md.get("rebuilt")}
        tick_at = None
        for tick in self.ticks(after=pushed_at - 30):
            if run_id in (tick.run_ids or []):
                tick_at = tick.timestamp
                break
        synced = self.synced_at(str(manifest), since_wall=pushed_at) if manifest else None
        return Delivery(
            sha=sha, pushed_at=pushed_at, run_id=run_id, status=record.dagster_run.status.value, created=created,
            enqueued=stamps.get(T.RUN_ENQUEUED.value), starting=stamps.get(T.RUN_STARTING.value),
            start=start if start is not None else created, end=end if end is not None else created, steps=steps,
            first_step_start=first, last_step_end=last, tick_at=tick_at, manifest=str(manifest) if manifest else None,
            synced_at=synced, rebuilt=rebuilt, failure=failure,
            converge=(metadata.get("argocd_sync") or {}).get("seconds_to_converge"))

    def synced_at(self, revision: str, *, since_wall: float) -> float | None:
        """Wall time the double's Application was first Synced (by an operation at ``revision``) and Healthy."""
        assert self.double is not None
        since = since_wall - _MONO_TO_WALL
        applied = False
        for e in list(self.double.events):
            if e.at < since:
                continue
            d = e.detail
            if e.kind == "operation-finished" and d.get("phase") == "Succeeded" and d.get("revision") == revision:
                applied = True
            elif applied and e.kind == "health" and d.get("status") == "Healthy" or (applied and e.kind == "refresh" and d.get("revision") == revision and d.get("synced")
                  and d.get("health") == "Healthy"):
                return e.at + _MONO_TO_WALL
        return None

    def wait_synced(self, revision: str, *, since_wall: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.synced_at(revision, since_wall=since_wall)
            if at is not None:
                return at
            time.sleep(0.2)
        return None


# -- the webhook receiver -----------------------------------------------------------------------

class Webhook:
    """``python -m coelho_pipeline.cli webhook --listen 127.0.0.1:PORT --url <dagster>`` (GitLab push events)."""

    def __init__(self, session: DaemonSession) -> None:
        self.session = session
        self.secret = uuid.uuid4().hex
        self.port = 0
        self.path = ""
        self.last_answer = ""
        self.service: services.Service | None = None

    @staticmethod
    def available(env: Mapping[str, str]) -> tuple[bool, str]:
        """Whether this checkout has the ``webhook`` command; (yes/no, its --help or the error)."""
        result = subprocess.run([sys.executable, "-m", "coelho_pipeline.cli", "webhook", "--help"], cwd=REPO_ROOT,
                                env=dict(env), capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            return False, (result.stderr.strip().splitlines() or ["exit " + str(result.returncode)])[-1]
        return True, result.stdout

    def start(self, help_text: str) -> None:
        self.port = services.free_port()
        url = f"http://127.0.0.1:{self.session.port}"
        # The brief puts --url after the subcommand; an older parser only has the global one.
        argv = [sys.executable, "-m", "coelho_pipeline.cli"]
        sub = ["webhook", "--listen", f"127.0.0.1:{self.port}"]
        argv += (sub + ["--url", url]) if "--url" in help_text else (["--url", url] + sub)
        log_path = self.session.dir / "webhook.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - the child's for its lifetime
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**self.session.env, "COELHO_WEBHOOK_SECRET": self.secret})
        log_file.close()
        self.service = services.Service("coelho webhook", process, log_path)

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        services.wait_for(listening, timeout=60, what=f"coelho webhook on 127.0.0.1:{self.port}",
                          service=self.service)
        log(f"{self.session.name}: coelho webhook listening on 127.0.0.1:{self.port} (pid {process.pid})")

    def post(self, branch: str, before: str, after: str) -> int:
        body = {"object_kind": "push", "event_name": "push", "ref": f"refs/heads/{branch}", "before": before,
                "after": after, "checkout_sha": after, "total_commits_count": 1}
        headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": self.secret}
        status = 0
        # The receiver's path is its own business: the root first, then the usual names, remembered.
        for path in ([self.path] if self.path else ["/", "/webhook", "/hooks/gitlab", "/gitlab"]):
            response = requests.post(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body), headers=headers,
                                     timeout=30)
            status, self.last_answer = response.status_code, response.text.strip()[:300]
            if status not in (404, 405):
                self.path = path
                break
        return status

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(timeout=10)
            self.service = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.session.dir / "webhook.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
