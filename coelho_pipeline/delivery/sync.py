"""Which revision Argo CD is asked for, and which revisions reached during the wait still count.

The branch only moves forward under a delivery: a rerun of an old commit syncs the head (never an
older revision), and a push during the wait (ours or a human's) is success as long as the revision
Argo CD reached still deploys this delivery's images, or newer ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from coelho_pipeline.argocd import RevisionNotOnBranch
from coelho_pipeline.delivery.values_file import ValuesFileError, read_values
from coelho_pipeline.domain import ManifestCommit
from coelho_pipeline.resources.git import GitError, GitRemote
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import ValuesError, read_scalar

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# How far back from the head the commit that replaced this delivery's tags is looked for.
SUPERSEDED_SEARCH_LIMIT = 200
# A fetch during the sync wait (a revision pushed after ours) may not eat the wait.
ACCEPT_FETCH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class DeliveredImages:
    """Each app's (repository, tag) as this delivery's manifest commit left them in values.yaml."""

    remote: GitRemote
    target: DeliveryTargetResource
    images: dict[str, tuple[str | None, str | None]]  # tag_path -> (repository, tag)

    @classmethod
    def at(cls, remote: GitRemote, target: DeliveryTargetResource, sha: str) -> "DeliveredImages":
        text = _values_at(remote, target, sha)
        return cls(remote, target, {
            app.tag_path: (read_scalar(text, app.repository_path, source=target.values_path),
                           read_scalar(text, app.tag_path, source=target.values_path))
            for app in target.catalog()
        })

    def compare(self, sha: str) -> tuple[list[str], list[str]]:
        """(newer, foreign) at ``sha``: tags replaced by a descendant commit's SHA (a newer
        delivery), and images that are neither ours nor newer. Both empty = exactly ours."""
        text = _values_at(self.remote, self.target, sha)
        newer, foreign = [], []
        for app in self.target.catalog():
            repository, tag = self.images[app.tag_path]
            now_repository = read_scalar(text, app.repository_path, source=self.target.values_path)
            now_tag = read_scalar(text, app.tag_path, source=self.target.values_path)
            if (now_repository, now_tag) == (repository, tag):
                continue
            if self._descends(tag, now_tag):
                newer.append(f"{app.tag_path} {now_tag}")
            else:
                foreign.append(f"{app.tag_path} is {now_repository}:{now_tag}, this delivery deployed "
                               f"{repository}:{tag}")
        return newer, foreign

    def _descends(self, ours: str | None, theirs: str | None) -> bool:
        if not ours or not theirs or not _SHA_RE.match(ours) or not _SHA_RE.match(theirs) or ours == theirs:
            return False
        r = self.remote
        return r.has_commit(ours) and r.has_commit(theirs) and r.is_ancestor(ours, theirs)


@dataclass(frozen=True)
class SyncPlan:
    """What to ask Argo CD for: the branch head, and which other revisions still count as done."""

    revision: str
    delivered: DeliveredImages
    story: str  # one sentence for the log and the metadata

    def accepts(self, revision: str) -> str | bool | None:
        """Why ``revision`` (reached during the wait) is as good as ours; False when it is not; None
        when git cannot tell right now (the wait asks again on its next read)."""
        remote = self.delivered.remote
        try:
            if not _SHA_RE.match(revision):
                return False
            if not remote.has_commit(revision):
                # Pushed after our fetch. Bounded well below the sync timeout: the wait must keep polling.
                replace(remote, network_timeout=ACCEPT_FETCH_TIMEOUT_SECONDS,
                        lock_timeout=ACCEPT_FETCH_TIMEOUT_SECONDS).fetch()
            if not remote.has_commit(revision) or not remote.is_ancestor(self.revision, revision):
                return False
            _, foreign = self.delivered.compare(revision)
        except GitError as e:
            return None if e.transient else False
        except (ValuesFileError, ValuesError):
            return False  # unreadable is not ours: the wait goes on and its timeout shows the status
        return False if foreign else f"descendant {revision} (pushed during the wait)"


def plan_sync(remote: GitRemote, target: DeliveryTargetResource, manifest: ManifestCommit, *,
              application: str) -> "SyncPlan":
    """The branch head, if this delivery's commit is on it; a commit forced off the branch syncs nothing.

    Syncing anything older than the head would roll back whatever was delivered since; going
    back is an explicit rollback, never the side effect of a rerun.
    """
    head = remote.fetch()
    ours = manifest.sha
    if ours != head and not (remote.has_commit(ours) and remote.is_ancestor(ours, head)):
        raise RevisionNotOnBranch(
            f"Application {application}: this delivery's manifest commit {ours} is not on {remote.branch} any "
            f"more (the head is {head}; the history was rewritten); nothing was synced. The head is delivered "
            "by its own run."
        )
    delivered = DeliveredImages.at(remote, target, ours)
    if ours == head:
        return SyncPlan(head, delivered, f"this delivery's commit {head} is the branch head; synced it")
    newer, foreign = delivered.compare(head)
    if not newer and not foreign:
        carried = "which still carries this delivery's tags"
    else:
        carried = f"this delivery's tags were superseded by {_first_replacing(remote, delivered, ours, head)}"
    return SyncPlan(head, delivered, f"the branch head {head} is newer than this delivery's commit {ours}; "
                                     f"synced the head, {carried}")


def _first_replacing(remote: GitRemote, delivered: DeliveredImages, ours: str, head: str) -> str:
    """The oldest commit after ``ours`` whose values.yaml no longer holds exactly this delivery's images."""
    for commit in reversed(remote.commits_between(ours, head, limit=SUPERSEDED_SEARCH_LIMIT)):
        newer, foreign = delivered.compare(commit.sha)
        if newer or foreign:
            return commit.sha
    return f"a commit more than {SUPERSEDED_SEARCH_LIMIT} commits before the head"


def _values_at(remote: GitRemote, target: DeliveryTargetResource, sha: str) -> str:
    return read_values(remote, sha, target.values_path)
