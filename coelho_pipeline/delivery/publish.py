"""The single writer of the manifest branch: fetch → write → verify → push, with a declared retry.

On every attempt the tip is fetched again and everything that depends on it is redone: the source
commit must still be on the branch (a force-push may have removed it), the writes are re-applied
to the tip's values.yaml (never a text rebase), and what is about to be pushed is verified (its
images exist, the chart renders with them). A rejected push (the branch moved) is the only error
retried here; every other error leaves the branch untouched and goes up to the caller.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coelho_pipeline.delivery.plan import AppliedWrites, apply_writes, is_full_sha
from coelho_pipeline.delivery.values_file import read_values
from coelho_pipeline.delivery.verify import Verification, missing_images, verify
from coelho_pipeline.domain import ManifestCommit, ValueWrite, VerifiedValues
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import VALUES_FILE_TRAILER, GitRemote, PushRejected
from coelho_pipeline.resources.images import Registry
from coelho_pipeline.resources.target import DeliveryTargetResource


class SourceCommitGone(PipelineError):
    """The source commit is no longer on the branch (history was rewritten); terminal."""


class BranchKeepsMoving(PipelineError):
    """Every push attempt was rejected because the branch moved. Terminal for this step: the push
    loop is already the declared retry for this condition, and retrying it again only multiplies it."""


@dataclass(frozen=True)
class PushPolicy:
    """How often a rejected push is retried, and how long to wait between attempts (with jitter)."""

    attempts: int = 6
    backoff_seconds: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int) -> float:
        base = self.backoff_seconds[min(attempt - 1, len(self.backoff_seconds) - 1)]
        return base * (1 + random.random() / 2)  # jitter keeps competing writers from retrying in step


def ensure_on_branch(remote: GitRemote, source_sha: str, tip: str) -> None:
    if not remote.is_ancestor(source_sha, tip):
        raise SourceCommitGone(f"commit {source_sha} is no longer on {remote.branch} (tip {tip[:12]}): the "
                               "history was rewritten; its tags are not written onto the new history")


@dataclass(frozen=True)
class Publication:
    """What one push publishes: the delivery of ``source_sha``'s images, or a rollback to them."""

    source_sha: str
    writes: tuple[ValueWrite, ...]
    subject: str  # the message's first line, before "[skip ci]"
    trailers: tuple[tuple[str, str], ...] = ()  # after Source-Commit
    # A rollback goes back on purpose: it writes over newer tags, and an earlier delivery of the
    # same commit does not make it redundant.
    rollback: bool = False

    def message(self, changes: Sequence[tuple[str, str | None, str]], *, values_file: str = "") -> str:
        """The commit message; ``values_file`` (GitRemote.values_file) scopes it to one environment."""
        body = "\n".join(f"{path}: {old or '(empty)'} -> {new}" for path, old, new in changes)
        scope = ((VALUES_FILE_TRAILER, values_file),) if values_file else ()
        trailers = "".join(f"{key}: {value}\n" for key, value in (("Source-Commit", self.source_sha),
                                                                  *self.trailers, *scope))
        return f"{self.subject} [skip ci]\n\n{body}\n\n{trailers}"


def delivery(source_sha: str, writes: Sequence[ValueWrite], *, promoted_from: str = "",
             environment: str = "") -> Publication:
    """A delivery's commit; a promotion's names the environment its images come from."""
    if promoted_from:
        return Publication(source_sha, tuple(writes), f"Promote {source_sha} from {promoted_from} to {environment}",
                           trailers=(("Promoted-From", promoted_from),))
    return Publication(source_sha, tuple(writes), f"Update image tags to {source_sha}")


def prepare(remote: GitRemote, tip: str, *, source_sha: str, writes: Sequence[ValueWrite],
            target: DeliveryTargetResource, keep_newer: bool = True) -> AppliedWrites:
    """The writes applied to values.yaml at ``tip``, leaving any newer delivery's tags alone
    (unless ``keep_newer`` is off, as for a rollback)."""
    text = read_values(remote, tip, target.values_path)
    return apply_writes(text, writes, source_sha=source_sha, source=target.values_path,
                        is_newer=lambda tag: keep_newer and is_full_sha(tag) and remote.has_commit(tag)
                        and remote.is_ancestor(source_sha, tag))


def publish(remote: GitRemote, publication: Publication, *, target: DeliveryTargetResource, registry: Registry,
            log: Callable[[str], None], policy: PushPolicy = PushPolicy(),
            verified: VerifiedValues | None = None) -> ManifestCommit:
    """Publishes the writes as one commit on the branch, or finds why none is needed.

    ``verified``: what this run has already checked; the text about to be pushed is rendered again
    unless it is that very text on that very tip (its images are looked up every time).
    """
    source_sha, writes = publication.source_sha, publication.writes
    for attempt in range(1, policy.attempts + 1):
        tip = remote.fetch()
        ensure_on_branch(remote, source_sha, tip)
        earlier = None if publication.rollback else remote.find_manifest_commit(source_sha)
        if earlier:
            moved_on = "" if earlier == tip else f"; the branch has moved on to {tip[:12]}"
            return ManifestCommit(earlier, False, source_sha, attempt,
                                  f"nothing to do, already committed as {earlier[:12]}{moved_on}", branch_head=tip)
        applied = prepare(remote, tip, source_sha=source_sha, writes=writes, target=target,
                          keep_newer=not publication.rollback)
        for note in applied.notes:
            log(note)
        if not applied.changes:
            holding = tip if publication.rollback else _already_holding(remote, applied, source_sha, tip, writes,
                                                                         target)
            return ManifestCommit(holding, False, source_sha, attempt, _nothing_to_do(applied, tip),
                                  branch_head=tip)
        if verified is not None and verified.covers(tip, applied.text):
            # The render depends on the tip and the text alone; the registry may have changed since.
            log(f"values.yaml at {tip[:12]}: rendered earlier in this run with this very text, not again; "
                "its images looked up again")
            check = Verification(tuple(missing_images(applied.text, target, registry, apps=applied.changed_apps)), ())
        else:
            check = verify(remote, tip, applied.text, target, registry, apps=applied.changed_apps)
        check.raise_if_failed(
            where=f"the values for {source_sha[:12]} on {remote.branch} at {tip[:12]} failed verification")
        changes = tuple((c.path, c.old, c.new) for c in applied.changes)
        new_sha = remote.commit_file(base_sha=tip, path=target.values_path, text=applied.text,
                                     message=publication.message(changes, values_file=remote.values_file))
        try:
            remote.push(new_sha)
        except PushRejected as e:
            if attempt == policy.attempts:
                raise BranchKeepsMoving(f"{e}; gave up after {attempt} attempts, nothing pushed") from e
            delay = policy.delay(attempt)
            log(f"attempt {attempt}: {e}; refetching and retrying in {delay:.1f}s")
            policy.sleep(delay)
            continue
        log(f"pushed {new_sha} to {remote.branch}: {len(changes)} value(s) changed")
        return ManifestCommit(new_sha, True, source_sha, attempt, f"{len(changes)} value(s) changed",
                              branch_head=new_sha, changes=changes)
    raise AssertionError("unreachable: the loop returns or raises")


def _nothing_to_do(applied: AppliedWrites, tip: str) -> str:
    if applied.superseded_by:
        by = ", ".join(s[:12] for s in applied.superseded_by)
        return f"nothing to do, already delivered by {by} (newer); " + "; ".join(applied.notes)
    return f"nothing to do, values.yaml at {tip[:12]} already holds these images"


def _already_holding(remote: GitRemote, applied: AppliedWrites, source_sha: str, tip: str,
                     writes: Sequence[ValueWrite], target: DeliveryTargetResource) -> str:
    """The commit that carries this delivery's state: the newer delivery's manifest commit, the
    source commit itself when its own values already hold the images (docs-only), else the tip."""
    if applied.superseded_by:
        return remote.find_manifest_commit(applied.superseded_by[0]) or tip
    own = apply_writes(read_values(remote, source_sha, target.values_path), writes, source_sha=source_sha,
                       source=target.values_path, is_newer=lambda tag: False)
    return source_sha if not own.changes else tip
