"""Frozen values that flow between the assets (and through Dagster's IO manager)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author_name: str
    author_email: str
    message: str
    committed_at: datetime

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else ""


@dataclass(frozen=True)
class AppPlan:
    """What the delivery of one commit does for one app."""

    app: str
    deployed_tag: str | None  # the tag values.yaml holds at the branch tip
    rebuild: bool
    reason: str


@dataclass(frozen=True)
class SourceCommit:
    commit: CommitInfo
    branch_tip: str  # manifest branch tip the plan was computed against
    plans: tuple[AppPlan, ...]

    @property
    def sha(self) -> str:
        return self.commit.sha

    @property
    def changed_apps(self) -> tuple[str, ...]:
        return tuple(p.app for p in self.plans if p.rebuild)

    def plan(self, app: str) -> AppPlan:
        return next(p for p in self.plans if p.app == app)


@dataclass(frozen=True)
class ImageRef:
    app: str
    repository: str  # <registry>/<image>
    tag: str
    digest: str | None
    rebuilt: bool

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class ValuesEdit:
    """The tag writes for one source commit and the file they produce at ``base_sha``."""

    path: str
    base_sha: str
    tags: tuple[tuple[str, str], ...]  # (values key path, tag) for every app, changed or not
    changes: tuple[tuple[str, str | None, str], ...]  # (key path, old, new) actually changed
    text: str


@dataclass(frozen=True)
class ManifestCommit:
    sha: str  # the commit Argo CD must reach: the new manifest commit, or the tip when nothing changed
    created: bool
    source_sha: str
    attempts: int
    reason: str
