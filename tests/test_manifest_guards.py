"""What stands between a delivery and the manifest branch: the push race, the render check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.resources.git import GitRemote, GitResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from pipeline_harness import Pipeline, check_results, materializations

pytestmark = pytest.mark.docker

PUSH_ATTEMPTS = DeliveryTargetResource.model_fields["push_attempts"].default

# How many more times a competing writer wins the race, and what it writes into values.yaml, per
# developer clone (the runs are in-process, so the test and the run share these).
_RACES: dict[str, int] = {}
_EDITS: dict[str, Callable[[str, int], str]] = {}


def bump_replicas(values: str, left: int) -> str:
    return values.replace("replicaCount: 1", "replicaCount: 2", 1) + f"# concurrent edit {left}\n"


@dataclasses.dataclass(frozen=True)
class RacingRemote(GitRemote):
    """A real GitRemote; between our commit and our push, another writer pushes to the branch."""

    dev_clone: str = ""

    def commit_file(self, **kwargs) -> str:
        sha = super().commit_file(**kwargs)
        if _RACES.get(self.dev_clone, 0) > 0:
            _RACES[self.dev_clone] -= 1
            clone = Path(self.dev_clone)
            services.git("pull", "-q", "--ff-only", "origin", self.branch, cwd=clone)
            values = clone / "k3d/helm/values.yaml"
            values.write_text(_EDITS.get(self.dev_clone, bump_replicas)(values.read_text(), _RACES[self.dev_clone]))
            services.git("commit", "-qam", "Concurrent values edit", cwd=clone,
                         env={"GIT_AUTHOR_NAME": "Other", "GIT_AUTHOR_EMAIL": "other@example.test",
                              "GIT_COMMITTER_NAME": "Other", "GIT_COMMITTER_EMAIL": "other@example.test"})
            services.git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=clone)
        return sha


class RacingGitResource(GitResource):
    dev_clone: str

    def remote(self) -> GitRemote:
        base = super().remote()
        return RacingRemote(**{f.name: getattr(base, f.name) for f in dataclasses.fields(GitRemote)},
                            dev_clone=self.dev_clone)


def _racing(pipeline: Pipeline, races: int, edit: Callable[[str, int], str] = bump_replicas) -> Pipeline:
    _RACES[str(pipeline.repo.clone)] = races
    _EDITS[str(pipeline.repo.clone)] = edit
    git = pipeline.defs.resources["git"]
    racing = RacingGitResource(url=git.url, branch=git.branch, cache_dir=git.cache_dir,
                               author_name=git.author_name, author_email=git.author_email,
                               dev_clone=str(pipeline.repo.clone))
    fast = pipeline.defs.resources["target"].model_copy(update={"push_backoff_seconds": [0.05]})
    pipeline.defs = dg.Definitions(assets=pipeline.defs.assets, jobs=pipeline.defs.jobs,
                                   resources={**pipeline.defs.resources, "git": racing, "target": fast})
    return pipeline


def test_rejected_push_is_refetched_reapplied_and_retried(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, "0" * 40])
    _racing(pipeline, races=2)

    result = pipeline.deliver(seed)

    assert result.success
    commit = materializations(result)["manifest_commit"]
    assert commit["created"] is True and commit["attempts"] == 3
    log = pipeline.repo.log(4)
    assert [s for _, _, s in log[:3]] == [f"Update image tags to {seed} [skip ci]",
                                          "Concurrent values edit", "Concurrent values edit"]
    values = pipeline.repo.show(log[0][0], "k3d/helm/values.yaml")
    assert values.count(seed) == 3  # our three tags...
    assert "replicaCount: 2" in values and "# concurrent edit 0" in values  # ...on top of their edits
    # Exactly the three tag lines and the three repositories (values.yaml named another registry)
    # differ from the competitor's commit.
    changed = [ln for ln in pipeline.repo.diff(log[1][0], log[0][0]).splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert len(changed) == 12 and all(ln[1:].lstrip().startswith(("tag:", "repository:")) for ln in changed)


def test_a_tag_written_concurrently_for_another_app_survives_the_retry(pipeline: Pipeline) -> None:
    """Only the rebuilt app's tag is re-applied on the new tip: the competitor's sveltekit tag stays."""
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    change = pipeline.repo.push({"apps/fastapi/main.py": "print('v2')\n"}, "FastAPI: v2")
    pinned = "0" * 40  # e.g. an operator pinning sveltekit while our run is between commit and push

    def pin_sveltekit(values: str, _left: int) -> str:
        lines = values.splitlines(keepends=True)
        at = next(i for i, ln in enumerate(lines) if ln.startswith("sveltekit:"))
        tag = next(i for i in range(at, len(lines)) if lines[i].strip().startswith("tag:"))
        lines[tag] = lines[tag].replace(seed, pinned)
        return "".join(lines)

    _racing(pipeline, races=1, edit=pin_sveltekit)

    result = pipeline.deliver(change)

    assert result.success and materializations(result)["manifest_commit"]["attempts"] == 2
    values = pipeline.repo.show("master", "k3d/helm/values.yaml")
    assert f'"{pinned}"' in values and f'"{change}"' in values and values.count(f'"{seed}"') == 1


def test_push_gives_up_after_bounded_attempts_and_leaves_no_commit(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    pipeline.instance.add_dynamic_partitions("source_commits", [seed, "0" * 40])
    _racing(pipeline, races=PUSH_ATTEMPTS)

    result = pipeline.deliver(seed)

    assert not result.success
    failure = result.failure_data_for_node("manifest_commit")
    assert f"gave up after {PUSH_ATTEMPTS} attempts, nothing pushed" in failure.error.message
    assert all(s == "Concurrent values edit" for _, _, s in pipeline.repo.log(PUSH_ATTEMPTS))
    assert seed not in pipeline.repo.show("master", "k3d/helm/values.yaml")


def test_a_template_that_does_not_render_blocks_the_commit(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    template = "k3d/helm/templates/fastapi/deployment.yaml"
    broken = pipeline.repo.show("master", template) + "\n{{ .Values.fastapi.nosuch.key }}\n"
    bad = pipeline.repo.push({template: broken, "apps/fastapi/main.py": "print('v2')\n"}, "Break the chart")
    head = pipeline.repo.head()

    result = pipeline.deliver(bad)

    assert not result.success
    assert check_results(result) == {"tags_exist_in_registry": True, "chart_renders_with_built_images": False}
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "chart_renders_with_built_images")
    problems = evaluation.metadata["problems"].value
    assert "does not render" in problems and "nosuch" in problems  # Helm's own message
    assert pipeline.repo.head() == head
    assert "manifest_commit" not in materializations(result)
