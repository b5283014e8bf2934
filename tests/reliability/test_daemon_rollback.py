"""Rollback → hold → release through `dagster dev` and its daemon, launched as the UI launches jobs."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from daemon_harness import launch, wait_finished, wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

VALUES = "k3d/helm/values.yaml"


def test_rollback_hold_and_release_through_the_daemon(dagster_dev) -> None:
    repo, instance, double, port = dagster_dev
    seed = repo.head()
    assert wait_for_run(instance, seed).status == dg.DagsterRunStatus.SUCCESS
    bad = repo.push({"apps/fastapi/main.py": "print('bad')\n"}, "FastAPI: bad")
    assert wait_for_run(instance, bad).status == dg.DagsterRunStatus.SUCCESS

    rolled = wait_finished(instance, launch(port, "rollback", partition=seed,
                                            run_config={"ops": {"rollback_commit": {"config": {"reason": "bad"}}}}))

    assert rolled.status == dg.DagsterRunStatus.SUCCESS
    assert repo.log(1)[0][2] == f"Roll back to {seed} [skip ci]"
    live = double.deployments()["coelho-realtime-fastapi"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert live.endswith(f"/fastapi:{seed}")

    fix = repo.push({"apps/sveltekit/main.py": "print('fix')\n"}, "SvelteKit: fix while held")
    deadline = time.monotonic() + 60
    while True:  # the sensor sees the push and records it, and requests nothing
        observations = instance.fetch_observations(dg.AssetKey("source_commit"), limit=5).records
        if any(fix in str(o.asset_observation.metadata.get("recorded_while_held", "")) for o in observations):
            break
        assert time.monotonic() < deadline, "the sensor never recorded the push made during the hold"
        time.sleep(1)
    assert not instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": fix}))
    assert bad not in repo.show("master", VALUES)

    released = wait_finished(instance, launch(port, "release_hold"))
    delivered = wait_for_run(instance, fix)

    assert released.status == dg.DagsterRunStatus.SUCCESS
    assert delivered.status == dg.DagsterRunStatus.SUCCESS
    assert repo.log(1)[0][2] == f"Update image tags to {fix} [skip ci]"
    assert f'"{fix}"' in repo.show("master", VALUES)
