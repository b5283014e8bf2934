"""The run launcher of `dagster dev` (dagster.yaml: ``run_launcher``): each run in a process forked
from a warm one.

Dagster's default launcher asks the code server to start each run in a new Python process, which
imports Dagster, the docker SDK, GitPython, ruamel.yaml and the Kubernetes client before the first
step can start: about 1.5-2 s of every run's start on a 2-core machine, and the Kubernetes client
again inside ``argocd_sync``. This launcher keeps one process that has imported those libraries and
Dagster's storages (Python's multiprocessing fork server, ``preload_modules``) and forks each run's
worker from it. The worker then runs ``dagster api execute_run``'s command. The pipeline's own code
is not preloaded, so every run imports it afresh and a reloaded code location is what runs. (The
worker has the fork server's environment, taken when the first run started, and exits without
running atexit handlers, as any multiprocessing child.)

The fork server is started by the first run a process launches (the daemon's run queue), so the
first run after `dagster dev` starts costs what it does with Dagster's launcher, the next ones less.
A worker outlives the daemon: stopping `dagster dev` (SIGTERM) neither waits for a running delivery
nor kills it; Ctrl-C in its terminal interrupts the workers too (they are in its process group), as
it does with Dagster's launcher. The run's arguments reach the worker through the fork server's
pipe, never its argv.

What Dagster's launcher gets from the code server, this one does itself:

* a worker that exits before its run ends (killed, out of memory) fails the run at once (a thread
  of the launching process waits on each worker; if the fork server dies, on the worker's pid), so
  the writer slot is freed and run retries start;
* run monitoring asks ``check_run_worker_health``: the worker named by the run's ``coelho/run-worker``
  tag (pid, host, start time: on Linux a reused pid is not mistaken for it) is alive or it is not;
  the worker waits until that tag is written before it starts the run;
* termination (the UI's "Terminate") marks the run canceling and interrupts the worker, as the code
  server does: the step is interrupted and the run ends canceled.

A run this launcher cannot fork (a code server on another machine or interpreter, no fork server on
the platform, a fork server that cannot start) is launched by Dagster's default launcher, unchanged.
In a cluster each run is a Kubernetes Job (k3d/dagster/dagster.yaml); this launcher is for one
machine.
"""

import gc
import json
import multiprocessing
import multiprocessing.process
import multiprocessing.spawn
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import Array, DagsterRun, DagsterRunStatus, Field
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, LaunchRunContext, WorkerStatus
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster._utils import get_run_crash_explanation
from dagster._utils.log import get_dagster_logger

WORKER_TAG = "coelho/run-worker"
TAG_WAIT_SECONDS = 60
GONE_POLL_SECONDS = 1.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# What a run worker imports before and during its steps that is not the pipeline's own code and does
# not change while `dagster dev` runs: Dagster's run entry point and storages (SQLAlchemy, alembic;
# dagster_postgres when installed: a module that is missing is left out), the clients the steps use.
# Never a module whose import starts a thread: a process forked from a threaded one can hang on a
# lock another thread held. helm_python is such a module (its Go runtime starts threads when the
# library loads), so the render imports it in the worker.
DEFAULT_PRELOAD_MODULES = (
    "dagster",
    "dagster._cli.api",
    "dagster._core.execution.api",
    "dagster._core.storage.sqlite_storage",
    "dagster_postgres",
    "sqlalchemy",
    "alembic",
    "docker",
    "git",
    "requests",
    "ruamel.yaml",
    "kubernetes.client",
)

_logger = get_dagster_logger("coelho.launcher")


@dataclass(frozen=True)
class RunWorker:
    """The process a run was forked into, as its ``coelho/run-worker`` tag records it."""

    pid: int
    host: str
    started: int | None  # the kernel's start time of the process (clock ticks since boot), if known

    def to_tag(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started})

    @classmethod
    def from_run(cls, run: DagsterRun) -> "RunWorker | None":
        value = run.tags.get(WORKER_TAG)
        if value is None:
            return None
        record = json.loads(value)
        return cls(pid=int(record["pid"]), host=str(record["host"]), started=record.get("started"))

    def is_here(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Whether this very process still runs (not a later one given the same pid)."""
        started = process_start_time(self.pid)
        if started is not None:
            return self.started is None or started == self.started
        if Path("/proc/self/stat").exists():
            return False  # Linux: no such process, or a zombie
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def process_start_time(pid: int) -> int | None:
    """The start time of a live process from /proc (Linux), or None (gone, a zombie, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("utf-8", "replace")  # the name may be any bytes
    except OSError:
        return None
    # The command name (2nd field) may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of stat(5), counted from the state (field 3)


def _execute_run(serialized_args: str, tagged: Any) -> None:
    """A forked worker's body: ``dagster api execute_run`` with the run's arguments, once the launcher
    has recorded the worker in the run's tags (``tagged``, a multiprocessing Event). Before that the
    run is not written to, so the tag cannot be lost to a concurrent rewrite of the run's record."""
    if not tagged.wait(TAG_WAIT_SECONDS):
        sys.exit("the launcher did not record this run worker; the run was not started")
    # What the fork server imported lives as long as the worker: left out of the collector's full
    # passes, each of which would otherwise walk all of Dagster (~150 ms, once in a typical run).
    gc.freeze()
    from dagster._cli.api import execute_run_command

    execute_run_command.main(args=[serialized_args], prog_name="dagster api execute_run")


class WarmRunLauncher(DefaultRunLauncher):
    """Launches each run in a process forked from one that has imported Dagster and the heavy
    clients; see the module docstring."""

    def __init__(self, inst_data: ConfigurableClassData | None = None,
                 preload_modules: Sequence[str] = DEFAULT_PRELOAD_MODULES) -> None:
        super().__init__(inst_data=inst_data)
        self._preload_modules = list(preload_modules)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"preload_modules": Field(Array(str), is_required=False, default_value=list(DEFAULT_PRELOAD_MODULES),
                                         description="Modules the fork server imports once for every run; none may start "
                                                     "a thread when imported (a forked worker could hang).")}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]) -> "WarmRunLauncher":
        return cls(inst_data=inst_data, **config_value)

    def can_fork(self, run: DagsterRun) -> bool:
        """Whether ``run`` can be forked here: its code location is served on this machine, by this
        interpreter, started as `dagster` (as every code server of `dagster dev` is)."""
        origin = run.job_code_origin
        if "forkserver" not in multiprocessing.get_all_start_methods() or not isinstance(origin, JobPythonOrigin):
            return False
        location = run.remote_job_origin.repository_origin.code_location_origin if run.remote_job_origin else None
        remote = (isinstance(location, GrpcServerCodeLocationOrigin) and not location.socket
                  and location.host not in LOCAL_HOSTS)
        if remote:
            return False  # a code server elsewhere (another machine or container): its environment is not ours
        repository = origin.repository_origin
        # The fork server runs multiprocessing's interpreter (bytes on some versions); symlinks are
        # not resolved, since a venv's python is a link to the system's.
        forkserver_python = os.fsdecode(multiprocessing.spawn.get_executable())
        same_interpreter = os.path.abspath(repository.executable_path) == os.path.abspath(forkserver_python)
        return same_interpreter and list(repository.entry_point) == ["dagster"] and repository.container_image is None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self.can_fork(run):
            super().launch_run(context)
            return
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,  # type: ignore[arg-type]
                              instance_ref=self._instance.get_ref())
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(self._preload_modules)  # read when the fork server starts
        tagged = forkserver.Event()
        worker = forkserver.Process(target=_execute_run, args=(serialize_value(args), tagged),
                                    name=f"dagster-run-{run.run_id}")
        try:
            worker.start()
        except Exception:  # e.g. a preloaded module that fails to import kills the fork server
            _logger.exception("Could not fork run %s; launching it with Dagster's launcher", run.run_id)
            self._instance.report_engine_event("The fork server could not start this run's worker: "
                                               "launched by Dagster's default launcher.", run, cls=type(self))
            super().launch_run(context)
            return
        # A run outlives the daemon; multiprocessing would otherwise wait for it when the daemon exits.
        multiprocessing.process._children.discard(worker)  # noqa: SLF001
        assert worker.pid is not None
        record = RunWorker(pid=worker.pid, host=socket.gethostname(), started=process_start_time(worker.pid))
        try:
            self._instance.add_run_tags(run.run_id, {WORKER_TAG: record.to_tag()})
        except Exception:
            worker.kill()  # it has not started the run: nothing is left running for a run that failed to launch
            worker.join(TAG_WAIT_SECONDS)
            raise
        tagged.set()
        self._run_ids.add(run.run_id)
        # The watcher keeps ``tagged`` alive: the worker unpickles it after start() returned, and the
        # named semaphore behind it is removed once it is garbage.
        threading.Thread(target=self._end_run_if_worker_dies, args=(worker, record, run.run_id, tagged),
                         name=f"watch-{run.run_id[:8]}", daemon=True).start()

    def _end_run_if_worker_dies(self, worker: multiprocessing.process.BaseProcess, record: RunWorker,
                                run_id: str, tagged: Any) -> None:
        try:
            worker.join()
            # The exit status comes through the fork server: if it died (killed, out of memory), join
            # returns while the worker still runs, now without a parent. Wait for the worker itself.
            while record.is_alive():
                time.sleep(GONE_POLL_SECONDS)
            run = self._instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                return
            exit_code = worker.exitcode if worker.exitcode is not None else -1
            prefix = f"Run worker (pid {worker.pid}) of run {run_id}"
            message = (get_run_crash_explanation(prefix=prefix, exit_code=exit_code) if exit_code != 255
                       else f"{prefix} exited before the run ended (its exit status was lost with the fork server).")
            self._instance.report_engine_event(message, run, cls=type(self))
            if run.status == DagsterRunStatus.CANCELING:
                self._instance.report_run_canceled(run, message)
            else:
                self._instance.report_run_failed(run, message)
        except Exception:  # the instance may be gone with the daemon; run monitoring is the backstop
            _logger.exception("Could not end run %s after its worker exited", run_id)
        finally:
            worker.close()

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = RunWorker.from_run(run)
        if worker is None:
            # Launched by Dagster's launcher (see can_fork): its code server watches the worker.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not a forked worker; its code server watches it")
        if not worker.is_here():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker on host {worker.host}, not checked here")
        if worker.is_alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker (pid {worker.pid}) is no longer running")

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished:
            return False
        worker = RunWorker.from_run(run)
        if worker is None:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        if not worker.is_here() or not worker.is_alive():
            where = f"on host {worker.host}" if not worker.is_here() else "no longer running"
            self._instance.report_engine_event(f"Run worker (pid {worker.pid}) is {where}: not interrupted.",
                                               run, cls=type(self))
            return False
        # As the code server stops a run it started: an interrupt, which the step and the run turn into
        # a canceled run.
        os.kill(worker.pid, signal.SIGINT)
        return True
