"""Case 3 (sensor part), through the real daemon: after a force-push whose new history already carries a
pipeline commit on top (a delivery in flight landed there before the sensor's next tick), the human
commit beneath it is still delivered, exactly once, the way a user would cause it with `git push -f`.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from daemon_harness import sensor_cursor, wait_for_run

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

PIPELINE = {"GIT_AUTHOR_NAME": "coelho-pipeline", "GIT_AUTHOR_EMAIL": "pipeline@coelho-realtime.local",
            "GIT_COMMITTER_NAME": "coelho-pipeline", "GIT_COMMITTER_EMAIL": "pipeline@coelho-realtime.local"}


def test_the_human_commit_under_a_pipeline_commit_after_a_force_push_is_delivered(dagster_dev) -> None:
    repo, instance, _, _ = dagster_dev
    seed = repo.head()
    assert wait_for_run(instance, seed).status == dg.DagsterRunStatus.SUCCESS
    old = repo.push({"apps/fastapi/main.py": "print('first try')\n"}, "FastAPI: first try")
    assert wait_for_run(instance, old).status == dg.DagsterRunStatus.SUCCESS
    manifest_old = repo.log(1)[0][0]
    deadline = time.monotonic() + 60
    while sensor_cursor(instance) != manifest_old:
        assert time.monotonic() < deadline, "the sensor never ticked past the manifest commit"
        time.sleep(1)

    # The developer replaces the commit; the new history arrives with a pipeline commit already on top.
    services.git("fetch", "-q", "origin", cwd=repo.clone)
    services.git("reset", "-q", "--hard", seed, cwd=repo.clone)
    new = repo.commit({"apps/fastapi/main.py": "print('second try')\n"}, "FastAPI: second try")
    on_top = repo.commit({"README.md": "tidied by the pipeline\n"}, f"Update image tags to {seed} [skip ci]",
                         env=PIPELINE)
    services.git("push", "-q", "--force", "origin", "HEAD:refs/heads/master", cwd=repo.clone)
    assert repo.head() == on_top

    run = wait_for_run(instance, new)

    assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
    sha, author, subject = repo.log(1)[0]
    assert subject == f"Update image tags to {new} [skip ci]" and author == PIPELINE["GIT_AUTHOR_EMAIL"]
    assert f'"{new}"' in repo.show("master", "k3d/helm/values.yaml")
    # Delivered once: the sensor's next ticks see the delivery and request nothing more.
    deadline = time.monotonic() + 60
    while sensor_cursor(instance) != sha:
        assert time.monotonic() < deadline, "the sensor never ticked past the new manifest commit"
        time.sleep(1)
    time.sleep(12)
    assert len(instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": new}))) == 1
