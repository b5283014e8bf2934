"""Waiting on what `dagster dev` (webserver + daemon) does: runs by source SHA, the sensor's cursor."""

from __future__ import annotations

import time

import dagster as dg

RUN_TIMEOUT = 240


def wait_for_run(instance: dg.DagsterInstance, sha: str, timeout: float = RUN_TIMEOUT) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": sha}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished run for {sha} after {timeout}s")


def sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    states = [s for s in instance.all_instigator_state() if s.name == "git_push_sensor"]
    return states[0].instigator_data.cursor if states and states[0].instigator_data else None
