"""Waiting on what `dagster dev` (webserver + daemon) does: runs by source SHA, the sensor's cursor."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
import requests

from coelho_pipeline.dev import services

REPO_ROOT = Path(__file__).resolve().parents[1]

RUN_TIMEOUT = 240
T = TypeVar("T")


def wait_for_run(instance: dg.DagsterInstance, sha: str, timeout: float = RUN_TIMEOUT) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": sha}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished run for {sha} after {timeout}s")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, every: float = 0.2) -> T:
    """The first truthy value ``predicate`` returns within ``timeout`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not within {timeout:.0f}s")


def sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    states = [s for s in instance.all_instigator_state() if s.name == "git_push_sensor"]
    return states[0].instigator_data.cursor if states and states[0].instigator_data else None


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def launch(port: int, job: str, *, partition: str | None = None, assets: Sequence[str] = (),
           run_config: Mapping | None = None, tags: Mapping[str, str] | None = None) -> str:
    """What the UI's launchpad (or "Materialize selected", with ``assets``) sends; returns the run id."""
    selector: dict = {"repositoryLocationName": "coelho", "repositoryName": "__repository__", "pipelineName": job}
    if assets:
        selector["assetSelection"] = [{"path": dg.AssetKey.from_user_string(a).path} for a in assets]
    all_tags = {**({"dagster/partition": partition} if partition else {}), **(tags or {})}
    params = {"selector": selector, "runConfigData": dict(run_config or {}),
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]}}
    answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": LAUNCH, "variables": {"params": params}},
                           timeout=60).json()["data"]["launchPipelineExecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def wait_finished(instance: dg.DagsterInstance, run_id: str, timeout: float = RUN_TIMEOUT) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


@contextmanager
def dagster_dev_with_targets(tmp_path: Path, targets: Path, *, docker_host: str, base_images: Mapping[str, str],
                             kubeconfig: Path) -> Iterator[tuple[dg.DagsterInstance, int]]:
    """`dagster dev` (webserver + daemon, sqlite) configured by a targets file, as a user with several
    projects runs it: no COELHO_GIT_URL, every per-project setting in the file; yields (instance, port)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COELHO_")}
    env.update({
        "DAGSTER_HOME": str(home), "DOCKER_HOST": docker_host, "COELHO_TARGETS": str(targets),
        "COELHO_BUILD_NETWORK": "host", "COELHO_BUILD_ARGS": " ".join(f"{k}={v}" for k, v in base_images.items()),
        "COELHO_WORKDIR": str(tmp_path / "work"), "KUBECONFIG": str(kubeconfig), "COELHO_SYNC_TIMEOUT": "60",
        "COELHO_VERIFY_SOAK_SECONDS": "1", "COELHO_VERIFY_INTERVAL_SECONDS": "0.25", "COELHO_ROLLOUT_TIMEOUT": "20",
    })
    port = services.free_port()
    service = services.start_dagster_dev(project_dir=REPO_ROOT, env=env, port=port, log_path=tmp_path / "dagster.log")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance, port
    finally:
        service.stop(timeout=30)
