"""The Git push sensor against a real remote on the git daemon."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.resources.git import GitResource
from pipeline_harness import git_push_sensor
from pipeline_harness import DEV, make_source_repo, settings_for
from coelho_pipeline.definitions import build_definitions

PIPELINE = {"GIT_AUTHOR_NAME": "coelho-pipeline", "GIT_AUTHOR_EMAIL": "pipeline@coelho-realtime.local",
            "GIT_COMMITTER_NAME": "coelho-pipeline", "GIT_COMMITTER_EMAIL": "pipeline@coelho-realtime.local"}


@pytest.fixture
def repo(git_server):
    return make_source_repo(git_server)


@pytest.fixture
def resources(repo, tmp_path: Path) -> dict:
    settings = settings_for(repo, "127.0.0.1:5000/coelho", tmp_path / "work", {})
    return {"git": build_definitions(settings).resources["git"]}


def tick(resources: dict, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        return git_push_sensor(context)


def test_first_tick_delivers_the_head(repo, resources) -> None:
    result = tick(resources, None)
    head = repo.head()
    assert [r.partition_key for r in result.run_requests] == [head]
    assert result.run_requests[0].run_key == head
    assert result.dynamic_partitions_requests[0].partition_keys == [head]
    assert result.cursor == head


def test_no_new_commit_skips(repo, resources) -> None:
    result = tick(resources, repo.head())
    assert isinstance(result, dg.SkipReason) and "no new commit" in result.skip_message


def test_burst_delivers_only_the_newest_and_records_the_rest(repo, resources) -> None:
    start = repo.head()
    first = repo.push({"apps/fastapi/main.py": "print(1)\n"}, "one")
    second = repo.push({"apps/fastapi/main.py": "print(2)\n"}, "two")
    third = repo.push({"apps/sveltekit/main.py": "print(3)\n"}, "three")

    result = tick(resources, start)

    assert [r.partition_key for r in result.run_requests] == [third]
    assert result.dynamic_partitions_requests[0].partition_keys == [third]
    assert result.cursor == third
    (observation,) = result.asset_events
    assert observation.metadata["superseded_by"].value == third
    recorded = observation.metadata["superseded"].value
    assert first in recorded and second in recorded and third not in recorded


def test_pipeline_commits_are_skipped_but_move_the_cursor(repo, resources) -> None:
    start = repo.head()
    own = repo.push({"k3d/helm/values.yaml": repo.show("HEAD", "k3d/helm/values.yaml") + "\n# pipeline edit\n"},
                    f"Update image tags to {start} [skip ci]", env=PIPELINE)

    result = tick(resources, start)

    assert not result.run_requests
    assert result.cursor == own


def test_the_pipeline_author_alone_is_enough_to_skip(repo, resources) -> None:
    start = repo.head()
    repo.push({"README.md": "tidied by the pipeline\n"}, "A commit without the marker", env=PIPELINE)
    assert not tick(resources, start).run_requests


def test_skip_ci_from_anyone_is_skipped(repo, resources) -> None:
    start = repo.head()
    repo.push({"README.md": "x\n"}, "Tidy [skip ci]", env=DEV)
    assert not tick(resources, start).run_requests


def test_developer_commit_after_a_pipeline_commit_is_delivered(repo, resources) -> None:
    start = repo.head()
    repo.push({"k3d/helm/values.yaml": repo.show("HEAD", "k3d/helm/values.yaml") + "\n# pipeline edit\n"},
              f"Update image tags to {start} [skip ci]", env=PIPELINE)
    dev = repo.push({"apps/fastapi/main.py": "print(9)\n"}, "feature")

    result = tick(resources, start)

    assert [r.partition_key for r in result.run_requests] == [dev]
    assert not result.asset_events  # the pipeline's own commit is not "superseded", it is ignored


def test_unreachable_remote_fails_the_tick_with_the_url(resources, tmp_path) -> None:
    git = GitResource(url="git://127.0.0.1:1/none.git", cache_dir=str(tmp_path / "other"))
    with pytest.raises(Exception, match="127.0.0.1:1/none.git"):
        tick({"git": git}, None)


def test_a_force_push_back_to_a_delivered_commit_is_delivered_again(repo, resources) -> None:
    start = repo.head()
    ahead = repo.push({"apps/fastapi/main.py": "print('to be undone')\n"}, "Later reverted by force")
    services.git("push", "-q", "--force", "origin", f"{start}:refs/heads/master", cwd=repo.clone)

    result = tick(resources, ahead)

    (request,) = result.run_requests
    assert request.partition_key == start
    assert request.run_key != start  # the first delivery of start used that key; this one must run
    assert result.cursor == start


def _manifest_commit(repo, source_sha: str) -> str:
    """What the pipeline pushes on top of a commit: its own author, [skip ci], the Source-Commit trailer."""
    values = repo.show("HEAD", "k3d/helm/values.yaml")
    return repo.push({"k3d/helm/values.yaml": values + f"\n# delivered {source_sha}\n"},
                     f"Update image tags to {source_sha} [skip ci]\n\nSource-Commit: {source_sha}", env=PIPELINE)


def _rewrite_last_commit(repo, files: dict, message: str) -> str:
    """A developer amends the branch head and force-pushes it."""
    services.git("fetch", "-q", "origin", cwd=repo.clone)
    services.git("reset", "-q", "--hard", "origin/master", cwd=repo.clone)
    services.git("reset", "-q", "--hard", "HEAD~1", cwd=repo.clone)
    sha = repo.commit(files, message)
    services.git("push", "-q", "--force", "origin", "HEAD:refs/heads/master", cwd=repo.clone)
    return sha


@pytest.mark.parametrize("cache_knows_old_head", [True, False])
def test_a_human_commit_under_the_pipelines_commit_after_a_force_push_is_delivered(
        repo, resources, cache_knows_old_head: bool) -> None:
    """Case 3: a force-push replaces the head, and an in-flight delivery of the old head lands its manifest
    commit on top of the new history before the sensor ticks. The new commit must still be delivered."""
    start = repo.head()
    old = repo.push({"apps/fastapi/main.py": "print('old')\n"}, "FastAPI: first try")
    if cache_knows_old_head:
        assert tick(resources, start).cursor == old
    new = _rewrite_last_commit(repo, {"apps/fastapi/main.py": "print('fixed')\n"}, "FastAPI: fixed try")
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    own = _manifest_commit(repo, old)  # the in-flight run of `old` rebased its commit onto the new tip

    result = tick(resources, old)

    (request,) = result.run_requests
    assert request.partition_key == new
    assert request.run_key.startswith(new) and request.tags["coelho/source-sha"] == new
    assert result.dynamic_partitions_requests[0].partition_keys == [new]
    assert result.cursor == own


def test_after_a_force_push_a_commit_already_delivered_on_the_new_history_is_not_delivered_again(
        repo, resources) -> None:
    start = repo.head()
    old = repo.push({"apps/fastapi/main.py": "print('old')\n"}, "FastAPI: first try")
    new = _rewrite_last_commit(repo, {"apps/fastapi/main.py": "print('fixed')\n"}, "FastAPI: fixed try")
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    own = _manifest_commit(repo, new)

    result = tick(resources, old)

    assert not result.run_requests
    assert new[:12] in result.skip_reason.skip_message and own[:12] in result.skip_reason.skip_message
    assert result.cursor == own
    assert start != new


def test_a_force_push_of_several_commits_delivers_the_newest_and_records_the_rest(repo, resources) -> None:
    start = repo.head()
    old = repo.push({"apps/fastapi/main.py": "print('old')\n"}, "FastAPI: first try")
    assert tick(resources, start).cursor == old  # the cache clone now holds `old`
    services.git("reset", "-q", "--hard", "HEAD~1", cwd=repo.clone)
    one = repo.commit({"apps/fastapi/main.py": "print(1)\n"}, "one")
    two = repo.commit({"apps/sveltekit/main.py": "print(2)\n"}, "two")
    services.git("push", "-q", "--force", "origin", "HEAD:refs/heads/master", cwd=repo.clone)
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    _manifest_commit(repo, old)

    result = tick(resources, old)

    (request,) = result.run_requests
    assert request.partition_key == two
    (observation,) = result.asset_events
    assert one in observation.metadata["superseded"].value
