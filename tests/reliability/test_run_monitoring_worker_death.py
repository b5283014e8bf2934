"""Case 6 (run monitoring) and 7 (run retries), through the real daemon: the run worker of a delivery
dies (SIGKILL, by PID, with the git processes it started) while manifest_commit holds the writer slot and is
about to push. The run is marked failed within seconds, the delivery queued behind it proceeds (the
`coelho/manifest-writer` run slot and the `git_manifest` pool slot are both given back), nothing was
half-pushed, and Dagster's run retry delivers the killed commit afterwards: nothing is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_graphql import DagsterGraphQLClient

from daemon_harness import wait_for_run, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

# Under `dagster dev` the daemon that launched the worker (WarmRunLauncher) sees it exit at once and
# fails the run; 10 s leaves room for a loaded machine. See dagster.yaml for the bound without it.
DEAD_WORKER_BOUND_SECONDS = 10


@pytest.fixture
def hold(tmp_path: Path) -> Path:
    """A directory whose HOLD file makes every `git push` of the pipeline wait (and say so in PUSHING)."""
    d = tmp_path / "hold"
    d.mkdir()
    (d / "HOLD").touch()
    return d


@pytest.fixture
def dagster_dev_env(tmp_path: Path, hold: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_git = shutil.which("git")
    assert real_git
    wrapper = bin_dir / "git"
    # A push waits while HOLD exists: the kill below lands inside manifest_commit, before anything is sent.
    wrapper.write_text(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = push ] && [ -e '{hold}/HOLD' ]; then
    echo $$ > '{hold}/PUSHING'
    while [ -e '{hold}/HOLD' ]; do sleep 0.2; done
  fi
done
exec '{real_git}' "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out.append(child)
            out.extend(_descendants(child))
    return out


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        match = re.search(r"Started process for run \(pid: (\d+)\)", record.message or "")
        if match:
            return int(match.group(1))
    raise AssertionError(f"no 'Started process for run' event in run {run_id}")


def _runs(instance: dg.DagsterInstance, sha: str) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": sha}))


def test_a_dead_run_worker_frees_the_writer_slot_and_its_commit_is_retried(dagster_dev, hold: Path) -> None:
    repo, instance, _, port = dagster_dev
    seed = repo.head()
    first = wait_until(lambda: _runs(instance, seed), 120, "the sensor's first run")[0]
    wait_until(lambda: (hold / "PUSHING").exists(), 300, "the first delivery reaching its push")
    manifest_before = repo.head()
    assert manifest_before == seed  # the push is held: nothing written yet

    # Another delivery is launched meanwhile (from the UI: the sensor is waiting on the cache clone's
    # lock that the held push keeps, and [skip ci] keeps it from requesting this commit a second time).
    change = repo.push({"apps/fastapi/main.py": "print('queued behind a dead worker')\n"}, "FastAPI: queued [skip ci]")
    instance.add_dynamic_partitions("source_commits", [change])
    DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
        "deliver_commit", repository_location_name="coelho",
        tags={"dagster/partition": change, "coelho/source-sha": change})
    queued = wait_until(lambda: _runs(instance, change), 60, "the launched run for the new commit")[0]
    time.sleep(3)
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED

    worker = _worker_pid(instance, first.run_id)
    tree = [worker, *_descendants(worker)]
    # The steps run inside the worker (in-process executor); the held `git push` is its child.
    assert len(tree) > 1, "expected the held git push under the run worker"
    for pid in tree:  # the worker first, so it cannot react; then what it had started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.monotonic()
    (hold / "HOLD").unlink()  # later pushes go through

    failed = wait_until(lambda: (r := instance.get_run_by_id(first.run_id)).is_finished and r, 60, "the dead run ending")
    took = time.monotonic() - killed_at
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert took < DEAD_WORKER_BOUND_SECONDS, f"the dead run held the writer slot for {took:.1f}s"

    # The queued delivery runs (needs both the run-tag slot and the git_manifest pool slot back).
    done = wait_for_run(instance, change, timeout=300)
    assert done.run_id == queued.run_id and done.status == dg.DagsterRunStatus.SUCCESS, done.run_id
    subjects = [s for _, _, s in repo.log(5)]
    assert subjects[0] == f"Update image tags to {change} [skip ci]"
    assert f"Update image tags to {seed} [skip ci]" not in subjects[1:], "the killed run pushed after all"

    # Dagster's run retry (dagster.yaml run_retries) re-executes the killed delivery: nothing is lost.
    retry = wait_until(lambda: next((r for r in _runs(instance, seed) if r.parent_run_id == first.run_id), None),
                  60, "a retry of the killed run")
    retried = wait_until(lambda: (r := instance.get_run_by_id(retry.run_id)).is_finished and r, 300, "the retry ending")
    assert retried.status == dg.DagsterRunStatus.SUCCESS, retried.run_id
    assert repo.head() != seed
    # Nothing left running when dagster dev is stopped.
    wait_until(lambda: all(r.is_finished for r in instance.get_runs()), 300, "every run finishing")
