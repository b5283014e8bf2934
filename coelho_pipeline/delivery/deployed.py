"""Which source commits a deployment brought to production: the per-commit record lead time is
measured from (coelho_pipeline.insight).

A delivery of the newest commit of a burst deploys the commits it superseded too, so each
deployment records every human commit between the revision the previous delivery deployed and
the revision it reached, with its time and the apps it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.domain import CommitInfo, is_pipeline_commit
from coelho_pipeline.resources.git import GitRemote

# The argocd_sync metadata keys this module writes and coelho_pipeline.insight reads.
DEPLOYED_COMMITS_KEY = "deployed_commits"
SYNCED_AT_KEY = "synced_at"
# A deployment after a long pause (or after a force-push) records at most this many commits.
MAX_COMMITS = 200


@dataclass(frozen=True)
class DeployedCommit:
    sha: str
    committed_at: datetime
    apps: tuple[str, ...]  # the apps whose folder the commit changed

    def to_json(self) -> dict[str, object]:
        return {"sha": self.sha, "committed_at": self.committed_at.isoformat(), "apps": list(self.apps)}

    @staticmethod
    def from_json(data: dict[str, object]) -> DeployedCommit:
        apps = data.get("apps") or []
        return DeployedCommit(str(data["sha"]), datetime.fromisoformat(str(data["committed_at"])),
                              tuple(str(a) for a in apps) if isinstance(apps, list) else ())


def previous_revision(instance: dg.DagsterInstance, sync_key: dg.AssetKey, application: str, *,
                      run_id: str) -> str | None:
    """The revision the newest earlier delivery (another run) of ``application`` reached, or None."""
    records = instance.fetch_materializations(sync_key, limit=20).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        app, revision = metadata.get("application"), metadata.get("revision")
        if record.run_id != run_id and app is not None and app.value == application and revision and revision.value:
            return str(revision.value)
    return None


def deployed_commits(remote: GitRemote, apps: Sequence[App], *, previous: str | None, revision: str,
                     source: CommitInfo) -> list[DeployedCommit]:
    """The human commits in ``previous..revision``, newest first; just ``source`` without ``previous``
    (the first delivery recorded: the history before it was deployed by something else)."""
    if previous and remote.has_commit(previous):
        remote.ensure_commit(revision)  # a descendant pushed during the sync wait is not fetched yet
        commits = [c for c in remote.commits_between(previous, revision, limit=MAX_COMMITS)
                   if not is_pipeline_commit(c, remote.author_email)]
        touched = remote.touched(previous, revision, [a.context for a in apps], limit=MAX_COMMITS)
    else:
        commits = [source]
        touched = remote.touched(None, source.sha, [a.context for a in apps])
    by_context = {a.context: a.name for a in apps}
    return [DeployedCommit(c.sha, c.committed_at, tuple(by_context[p] for p in touched.get(c.sha, ())))
            for c in commits]
