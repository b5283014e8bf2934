"""WarmRunLauncher (coelho_pipeline/launcher.py), the run launcher dagster.yaml names, under the real
`dagster dev` (webserver, daemon, code server; sqlite): runs are forked from the warm process, a
reloaded code location runs its new code, the UI's Terminate cancels a run, a killed worker fails its
run at once, stopping `dagster dev` leaves a running worker to finish, and the health check run
monitoring asks after a daemon restart tells a live worker from a dead or reused pid.

The code location here is a one-op probe job written by the test (not the pipeline), so that the
test can hold a run in its step and change the code between runs; the deliveries' own runs go
through the same launcher in every `dagster_dev` test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from dagster._core.code_pointer import FileCodePointer
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import WorkerStatus
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from coelho_pipeline.dev import services
from coelho_pipeline.launcher import WORKER_TAG, RunWorker, WarmRunLauncher, process_start_time
from daemon_harness import wait_until

pytestmark = pytest.mark.daemon

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "probe"
# The daemon fails a run whose worker died as soon as the worker's exit is seen; 10 s leaves room
# for a loaded machine (run monitoring, every 10 s, would take up to 20 s).
DEAD_WORKER_BOUND_SECONDS = 10

PROBE = '''
import gc, json, os, sys, time
from pathlib import Path
import dagster as dg

VERSION = "{version}"

@dg.op
def probe(context) -> None:
    out = Path(os.environ["PROBE_DIR"])
    record = {{"version": VERSION, "pid": os.getpid(), "ppid": os.getppid(),
               "preloaded": "kubernetes.client" in sys.modules, "frozen": gc.get_freeze_count()}}
    (out / f"{{context.run_id}}.started").write_text(json.dumps(record))
    while (out / "HOLD").exists():
        time.sleep(0.1)
    (out / f"{{context.run_id}}.done").write_text("done")

@dg.job(executor_def=dg.in_process_executor)
def probe_job() -> None:
    probe()

defs = dg.Definitions(jobs=[probe_job])
'''

GRAPHQL_TIMEOUT = 60
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } }
}"""
RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename ... on WorkspaceLocationEntry { locationOrLoadError { __typename } }
  }
}"""


class ProbeDev:
    """`dagster dev` on the probe location: the instance, the UI's GraphQL, the probe's directory."""

    def __init__(self, root: Path) -> None:
        self.code = root / "code"
        self.out = root / "out"
        self.home = root / "dagster_home"
        for d in (self.code, self.out, self.home):
            d.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.write_probe("v1")
        (self.code / "workspace.yaml").write_text(json.dumps({"load_from": [{"python_file": {
            "relative_path": "probe.py", "location_name": LOCATION, "working_directory": str(self.code)}}]}))
        self.port = services.free_port()
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "PROBE_DIR": str(self.out)}
        self.service = services.start_dagster_dev(project_dir=self.code, env=env, port=self.port,
                                                  log_path=root / "dagster.log")
        self.instance = dg.DagsterInstance.from_config(str(self.home))

    def write_probe(self, version: str) -> None:
        (self.code / "probe.py").write_text(PROBE.format(version=version))

    def graphql(self, query: str, **variables: object) -> dict:
        answer = requests.post(f"http://127.0.0.1:{self.port}/graphql", timeout=GRAPHQL_TIMEOUT,
                               json={"query": query, "variables": variables}).json()
        assert "errors" not in answer, answer
        return answer["data"]

    def launch(self) -> str:
        params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                               "pipelineName": "probe_job"}, "runConfigData": {}}
        answer = self.graphql(LAUNCH, params=params)["launchPipelineExecution"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        return answer["run"]["runId"]

    def started(self, run_id: str, timeout: float = 120) -> dict:
        path = self.out / f"{run_id}.started"
        wait_until(path.exists, timeout, f"run {run_id} reaching its step")
        return json.loads(path.read_text())

    def finished(self, run_id: str, timeout: float = 120) -> dg.DagsterRun:
        return wait_until(lambda: (r := self.instance.get_run_by_id(run_id)) is not None and r.is_finished and r,
                     timeout, f"run {run_id} finishing")

    def stop(self) -> None:
        self.instance.dispose()
        self.service.stop(timeout=30)


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.fixture(scope="module")
def probe_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeDev]:
    dev = ProbeDev(tmp_path_factory.mktemp("warm-launcher"))
    try:
        yield dev
    finally:
        (dev.out / "HOLD").unlink(missing_ok=True)
        dev.stop()


def test_runs_are_forked_from_the_warm_process_and_a_reload_runs_the_new_code(probe_dev: ProbeDev) -> None:
    first = probe_dev.launch()
    record = probe_dev.started(first)
    assert probe_dev.finished(first).status == dg.DagsterRunStatus.SUCCESS
    run = probe_dev.instance.get_run_by_id(first)
    assert RunWorker.from_run(run).pid == record["pid"], run.tags.get(WORKER_TAG)
    # Dagster's launcher would have the code server spawn a new interpreter that imports what the
    # job imports; this worker was forked from the fork server, which had imported the Kubernetes
    # client (the probe never imports it) and is itself started by the daemon.
    assert record["preloaded"], record
    # What it inherited is left out of the collector's full passes (gc.freeze): each would walk it all.
    assert record["frozen"] > 10_000, record
    forkserver = record["ppid"]
    assert "multiprocessing.forkserver" in _cmdline(forkserver), _cmdline(forkserver)
    assert "dagster._daemon" in _cmdline(_parent(forkserver)), _cmdline(_parent(forkserver))
    # A process forked from a threaded one can hang on a lock another thread held: no preloaded module
    # may start a thread (helm_python's Go runtime does; a delivery's render then hangs forever).
    threads = len(list(Path(f"/proc/{forkserver}/task").iterdir()))
    assert threads == 1, f"the fork server runs {threads} threads"
    assert record["version"] == "v1"

    # The pipeline's code is not preloaded: what the user changed and reloaded is what runs next.
    probe_dev.write_probe("v2")
    answer = probe_dev.graphql(RELOAD, name=LOCATION)["reloadRepositoryLocation"]
    assert answer["locationOrLoadError"]["__typename"] == "RepositoryLocation", answer
    second = probe_dev.launch()
    record = probe_dev.started(second)
    assert probe_dev.finished(second).status == dg.DagsterRunStatus.SUCCESS
    assert record["version"] == "v2" and record["ppid"] == forkserver, record


def test_terminate_from_the_ui_cancels_the_run_and_stops_its_worker(probe_dev: ProbeDev) -> None:
    (probe_dev.out / "HOLD").touch()
    run_id = probe_dev.launch()
    pid = probe_dev.started(run_id)["pid"]
    answer = probe_dev.graphql(TERMINATE, runId=run_id)["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    run = probe_dev.finished(run_id, timeout=60)
    (probe_dev.out / "HOLD").unlink()
    assert run.status == dg.DagsterRunStatus.CANCELED
    wait_until(lambda: process_start_time(pid) is None, 30, f"worker {pid} exiting")
    assert not (probe_dev.out / f"{run_id}.done").exists()


def test_a_killed_worker_fails_its_run_at_once(probe_dev: ProbeDev) -> None:
    (probe_dev.out / "HOLD").touch()
    run_id = probe_dev.launch()
    pid = probe_dev.started(run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    run = probe_dev.finished(run_id, timeout=60)
    took = time.monotonic() - killed_at
    (probe_dev.out / "HOLD").unlink()
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert took < DEAD_WORKER_BOUND_SECONDS, f"the dead worker's run took {took:.1f}s to fail"
    messages = [e.message for e in probe_dev.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert any(f"Run worker (pid {pid})" in (m or "") and "signal 9" in (m or "") for m in messages), messages


def test_a_dead_fork_server_fails_no_run_whose_worker_still_runs(probe_dev: ProbeDev) -> None:
    (probe_dev.out / "HOLD").touch()
    run_id = probe_dev.launch()
    record = probe_dev.started(run_id)
    # The workers' exit statuses come through the fork server; killed (say, out of memory), it takes
    # them along, while the worker itself goes on with its run.
    os.kill(record["ppid"], signal.SIGKILL)
    wait_until(lambda: process_start_time(record["ppid"]) is None, 30, "the fork server gone")
    time.sleep(3)
    assert probe_dev.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    (probe_dev.out / "HOLD").unlink()
    assert probe_dev.finished(run_id).status == dg.DagsterRunStatus.SUCCESS
    # The next run starts a new fork server.
    after = probe_dev.launch()
    assert probe_dev.finished(after).status == dg.DagsterRunStatus.SUCCESS
    assert probe_dev.started(after)["ppid"] != record["ppid"]


def test_a_running_worker_outlives_dagster_dev_and_finishes_its_run(tmp_path: Path) -> None:
    dev = ProbeDev(tmp_path)
    try:
        (dev.out / "HOLD").touch()
        run_id = dev.launch()
        pid = dev.started(run_id)["pid"]
        # Only `dagster dev` itself is signalled (Service.stop would then kill its whole process group,
        # the worker included): it stops cleanly and soon, neither waiting for the run nor killing it.
        dev.service.process.send_signal(signal.SIGTERM)
        assert dev.service.process.wait(timeout=30) == 0, dev.service.process.returncode
        assert process_start_time(pid) is not None, "the worker was stopped with dagster dev"
        (dev.out / "HOLD").unlink()
        assert dev.finished(run_id, timeout=60).status == dg.DagsterRunStatus.SUCCESS
        assert (dev.out / f"{run_id}.done").exists()
    finally:
        (dev.out / "HOLD").unlink(missing_ok=True)
        dev.stop()


# The health check and the fork decision, on an instance of this repository's dagster.yaml.

@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, WarmRunLauncher)
        yield instance


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def _run_with_worker(instance: dg.DagsterInstance, worker: RunWorker | None) -> dg.DagsterRun:
    tags = {WORKER_TAG: worker.to_tag()} if worker else {}
    return instance.add_run(dg.DagsterRun(job_name="probe_job", run_id=str(uuid.uuid4()), tags=tags,
                                          status=dg.DagsterRunStatus.STARTED))


def test_the_health_check_tells_a_live_worker_from_a_dead_or_reused_pid(
        instance: dg.DagsterInstance, live_process: subprocess.Popen) -> None:
    launcher = instance.run_launcher
    assert launcher.supports_check_run_worker_health
    host = socket.gethostname()
    started = process_start_time(live_process.pid)
    assert started is not None

    def status(worker: RunWorker | None) -> WorkerStatus:
        return launcher.check_run_worker_health(_run_with_worker(instance, worker)).status

    assert status(RunWorker(pid=live_process.pid, host=host, started=started)) == WorkerStatus.RUNNING
    # The same pid, given to another process since the worker started: not the worker.
    assert status(RunWorker(pid=live_process.pid, host=host, started=started - 1)) == WorkerStatus.FAILED
    live_process.kill()
    live_process.wait(timeout=10)
    assert status(RunWorker(pid=live_process.pid, host=host, started=started)) == WorkerStatus.FAILED
    # Not forked by this launcher (Dagster's launcher: the code server watches it) or on another host.
    assert status(None) == WorkerStatus.RUNNING
    assert status(RunWorker(pid=1, host=f"not-{host}", started=1)) == WorkerStatus.RUNNING


def test_a_run_of_another_interpreter_is_left_to_dagsters_launcher(instance: dg.DagsterInstance,
                                                                  tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(PROBE.format(version="v1"))
    def run_on(executable: str) -> dg.DagsterRun:
        repo = ReconstructableRepository(FileCodePointer(str(module), "defs", str(tmp_path)),
                                         executable_path=executable)
        origin = repo.get_reconstructable_job("probe_job").get_python_origin()
        return dg.DagsterRun(job_name="probe_job", run_id=str(uuid.uuid4()), job_code_origin=origin)

    launcher = instance.run_launcher
    assert launcher.can_fork(run_on(sys.executable))
    assert not launcher.can_fork(run_on(str(tmp_path / "other-venv" / "bin" / "python")))

    # A code server on another machine (workspace.yaml's grpc_server), even with the same interpreter path.
    def served_by(location: GrpcServerCodeLocationOrigin) -> dg.DagsterRun:
        run = run_on(sys.executable)
        return run._replace(remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, "__repository__"), "probe_job"))

    assert not launcher.can_fork(served_by(GrpcServerCodeLocationOrigin(host="10.1.2.3", port=4000,
                                                                         location_name=LOCATION)))
    assert launcher.can_fork(served_by(GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000,
                                                                    location_name=LOCATION)))
    assert launcher.can_fork(served_by(GrpcServerCodeLocationOrigin(host="localhost", socket="/tmp/probe.sock",
                                                                    location_name=LOCATION)))


def test_a_worker_never_recorded_in_its_runs_tags_does_not_start_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the tag, Terminate and the health check could not find the worker: it waits for it.
    import multiprocessing

    from coelho_pipeline import launcher

    monkeypatch.setattr(launcher, "TAG_WAIT_SECONDS", 0.1)
    never_tagged = multiprocessing.get_context("spawn").Event()
    with pytest.raises(SystemExit, match="did not record this run worker"):
        launcher._execute_run("not even read", never_tagged)

