"""`scripts/up` (python -m coelho_pipeline.dev.up) with a registry on a port the chart's values do not
name: the first delivery of the real apps lands, and values.yaml then names that registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from daemon_harness import wait_for_run
from pipeline_harness import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.daemon]


def test_up_delivers_into_a_registry_on_any_port(tmp_path: Path, docker_host: str, base_images) -> None:
    ui, registry, git_port = services.free_port(), services.free_port(), services.free_port()
    state = tmp_path / "state"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "coelho_pipeline.dev.up", "--state-dir", str(state), "--ui-port", str(ui),
             "--registry-port", str(registry), "--git-port", str(git_port)],
            cwd=REPO_ROOT, env={**os.environ, "DOCKER_HOST": docker_host}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    up = services.Service("scripts/up", process, log)
    try:
        home = state / "dagster_home"
        services.wait_for(lambda: (home / "dagster.yaml").exists(), timeout=240, what="scripts/up", service=up)
        bare = state / "git" / "coelho-realtime.git"
        seed = services.git("rev-parse", "refs/heads/master", cwd=bare)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = wait_for_run(instance, seed, timeout=900)
        assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
        values = services.git("show", "master:k3d/helm/values.yaml", cwd=bare)
        for image in ("fastapi", "kafka-producers", "sveltekit"):
            assert f"repository: 127.0.0.1:{registry}/coelho/{image}\n" in values
        assert f'tag: "{seed}"' in values
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        up.stop()
    assert process.returncode == 0, log.read_text()[-3000:]  # SIGTERM stopped everything it started
