"""Frozen values that flow between the assets (and through Dagster's IO manager)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# A commit message with one of these is never delivered (the seed's CI convention).
SKIP_MARKERS = ("[skip ci]", "[ci skip]")


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


def is_pipeline_commit(commit: CommitInfo, pipeline_email: str) -> bool:
    """The pipeline's own manifest commits must never trigger another delivery (the loop guard), nor
    count as changes that reached production."""
    return commit.author_email == pipeline_email or any(m in commit.message for m in SKIP_MARKERS)


@dataclass(frozen=True)
class AppPlan:
    """What the delivery of one commit does for one app."""

    app: str
    deployed_tag: str | None  # the tag values.yaml holds at the source commit: the delivery before it
    rebuild: bool
    reason: str
    repository: str = ""  # where the image is pushed: <COELHO_REGISTRY>/<image>
    # Taken over from the environment it is promoted from: not built, but its tag is written.
    promoted: bool = False


@dataclass(frozen=True)
class SourceCommit:
    """A commit of the watched branch and its plan, computed from the commit itself (its own tree
    and the values.yaml it carries), so every rerun of its partition tells the same story."""

    commit: CommitInfo
    branch_tip: str  # branch head when the plan was made (for the record; the plan does not depend on it)
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
    rebuilt: bool  # built and pushed by this run
    new_tag: bool = False  # tagged with this source commit (built now or earlier), so its tag is written
    reason: str = ""

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class ValueWrite:
    """One scalar the delivery sets in values.yaml: an app's image tag or its repository."""

    app: str
    path: str  # values key path, e.g. fastapi.image.tag
    value: str
    kind: Literal["tag", "repository"]


@dataclass(frozen=True)
class ValuesEdit:
    """What one source commit writes into values.yaml, and what that changed at ``base_sha``."""

    path: str
    base_sha: str  # the branch tip the writes were applied to and checked against
    writes: tuple[ValueWrite, ...]  # the desired writes, re-applied to whatever tip the push lands on
    changes: tuple[tuple[str, str | None, str], ...]  # (key path, old, new) actually changed at base_sha
    notes: tuple[str, ...]  # writes left out and why (e.g. a newer delivery's tag is kept)
    verified: VerifiedValues | None = None  # set when the text at base_sha passed both checks


@dataclass(frozen=True)
class VerifiedValues:
    """A values.yaml text that passed both checks (its images exist, the chart renders with it) on ``tip``,
    in the run ``run_id``: the same text on the same tip need not be rendered again in that run."""

    run_id: str
    tip: str
    digest: str  # sha256 of the text

    @staticmethod
    def of(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def covers(self, tip: str, text: str) -> bool:
        return tip == self.tip and self.of(text) == self.digest


@dataclass(frozen=True)
class ManifestCommit:
    sha: str  # this delivery's commit: the one it pushed, found by its trailer, or the one already holding its tags
    created: bool
    source_sha: str
    attempts: int
    reason: str
    branch_head: str = ""  # the branch tip seen by the commit step
    changes: tuple[tuple[str, str | None, str], ...] = ()
