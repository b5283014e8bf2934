"""Which apps a commit rebuilds (delivery.plan.plan_apps), against a real git remote.

The registry is a labelled test double: it holds exactly the references it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coelho_pipeline.catalog import App
from coelho_pipeline.delivery.plan import plan_apps
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.resources.images import Registry
from pipeline_harness import make_source_repo

PREFIX = "127.0.0.1:47001/team-x"


@dataclass
class RegistryHolding(Registry):
    """Test double of the v2 registry: a tag exists when its ``repository:tag`` is in ``held``."""

    held: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def digest(self, repository: str, tag: str) -> str | None:
        self.asked.append(f"{repository}:{tag}")
        return "sha256:" + "0" * 64 if f"{repository}:{tag}" in self.held else None


@dataclass(frozen=True)
class CountingRemote(GitRemote):
    """The real remote, counting the git questions the plan asks."""

    calls: list[str] = field(default_factory=list, compare=False)

    def has_commit(self, sha: str) -> bool:
        self.calls.append("has_commit")
        return super().has_commit(sha)

    def changed_under(self, old: str, new: str, paths: Sequence[str]) -> dict[str, list[str]]:
        self.calls.append("changed_under")
        return super().changed_under(old, new, paths)


def test_each_reason_and_one_git_question_per_deployed_tag(git_server, tmp_path: Path) -> None:
    repo = make_source_repo(git_server)
    names = ["kept", "kept_too", "edited", "never", "branch_tag", "forgotten", "gone"]
    old = repo.push({f"svc/{n}/Dockerfile": "FROM scratch\n" for n in names}, "seven services")
    other = repo.push({"svc/gone/Dockerfile": "FROM scratch\n# other\n"}, "an image from another commit")
    sha = repo.push({"svc/edited/main.py": "print(1)\n"}, "edit one service")
    remote = CountingRemote(url=repo.url, branch="master", cache_dir=tmp_path / "cache")
    remote.fetch()
    apps = [App(n, build_context=f"svc/{n}") for n in names]
    registry = RegistryHolding(PREFIX, held={f"{PREFIX}/kept:{old}", f"{PREFIX}/kept-too:{old}"})
    deployed = {"kept": old, "kept_too": old, "edited": old, "never": None, "branch_tag": "main",
                "forgotten": "f" * 40, "gone": other}

    plans = {p.app: p for p in plan_apps(apps, sha=sha, deployed_tags=deployed, remote=remote, registry=registry)}
    # Three distinct full-SHA tags (old, other, ffff...): three lookups, and a diff for each known one.
    assert sorted(remote.calls) == ["changed_under"] * 2 + ["has_commit"] * 3

    assert [p.app for p in plan_apps(apps, sha=sha, deployed_tags=deployed, remote=remote,
                                     registry=registry)] == names  # catalog order
    assert {n: (p.rebuild, p.reason) for n, p in plans.items()} == {
        "kept": (False, f"unchanged since {old[:12]}"),
        "kept_too": (False, f"unchanged since {old[:12]}"),
        "edited": (True, f"1 file(s) changed under svc/edited/ since {old[:12]}"),
        "never": (True, "never delivered (empty tag in values)"),
        "branch_tag": (True, "deployed tag 'main' is not a commit of the branch"),
        "forgotten": (True, f"deployed tag {'f' * 40!r} is not a commit of the branch"),
        "gone": (True, f"{PREFIX}/gone:{other} is missing from the registry (COELHO_REGISTRY)"),
    }
    assert plans["kept"].repository == f"{PREFIX}/kept" and plans["never"].deployed_tag is None
    # Only unchanged apps cost a registry request; a changed one is rebuilt without asking.
    assert sorted(registry.asked) == sorted([f"{PREFIX}/kept:{old}", f"{PREFIX}/kept-too:{old}",
                                             f"{PREFIX}/gone:{other}"] * 2)
