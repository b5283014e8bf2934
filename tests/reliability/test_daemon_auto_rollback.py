"""Auto-rollback through `dagster dev` and its daemon: a delivery that turns Degraded is rolled back
to the last verified delivery by the failure sensor, and deliveries are held."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from coelho_pipeline.auto_rollback import AUTO_ROLLBACK_TAG
from coelho_pipeline.hold import current_hold
from pipeline_harness import SINGLE_TARGET
from daemon_harness import RUN_TIMEOUT, wait_finished, wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]


@pytest.fixture
def dagster_dev_env() -> dict[str, str]:
    return {"COELHO_AUTO_ROLLBACK": "true", "COELHO_SYNC_TIMEOUT": "6"}


def wait_for_auto_rollback(instance: dg.DagsterInstance, failed_run_id: str) -> dg.DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={AUTO_ROLLBACK_TAG: failed_run_id}))
        if runs:
            return wait_finished(instance, runs[0].run_id)
        assert time.monotonic() < deadline, "the failure sensor never requested the rollback"
        time.sleep(1)


def test_a_degraded_delivery_is_rolled_back_and_held_through_the_daemon(dagster_dev) -> None:
    repo, instance, double, _ = dagster_dev
    seed = repo.head()
    assert wait_for_run(instance, seed).status == dg.DagsterRunStatus.SUCCESS
    double.degrade('Deployment "coelho-realtime-fastapi" exceeded its progress deadline')
    bad = repo.push({"apps/fastapi/main.py": "print('bad')\n"}, "FastAPI: bad")

    failed = wait_for_run(instance, bad)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    # The double's Degraded is a switch, not tied to an image: the old version is healthy again.
    double.recover()
    rolled = wait_for_auto_rollback(instance, failed.run_id)

    assert rolled.status == dg.DagsterRunStatus.SUCCESS, rolled.run_id
    assert (rolled.job_name, rolled.tags["dagster/partition"]) == ("rollback", seed)
    assert repo.log(1)[0][2] == f"Roll back to {seed} [skip ci]"
    live = double.deployments()["coelho-realtime-fastapi"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert live.endswith(f"/fastapi:{seed}")
    hold = current_hold(instance, SINGLE_TARGET)
    assert hold is not None and hold.held and hold.rolled_back_to == seed
    assert hold.reason.startswith(f"auto-rollback: the delivery of {bad[:12]} degraded (")
    # Later ticks of the failure sensor request nothing more: exactly one rollback for one failure.
    finished = instance.get_run_record_by_id(rolled.run_id).end_time
    wait_for_failure_sensor_tick(instance, after=finished)
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name="rollback"))) == 1


def wait_for_failure_sensor_tick(instance: dg.DagsterInstance, *, after: float) -> None:
    (state,) = [s for s in instance.all_instigator_state() if s.name == "delivery_failure_sensor"]
    deadline = time.monotonic() + 120
    while not instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after, limit=1):
        assert time.monotonic() < deadline, "the failure sensor did not tick again"
        time.sleep(1)
