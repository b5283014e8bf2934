"""What the delivery of one commit does: which apps to rebuild, and which values.yaml scalars to write.

The plan of a commit is computed from that commit alone: its tree, and the values.yaml it carries
(which holds the tags of the delivery before it). A rerun of an old partition therefore describes
the same commit the same way, whatever the branch head has become since.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from coelho_pipeline.catalog import App
from coelho_pipeline.domain import AppPlan, ImageRef, ValueWrite
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.resources.images import Registry
from coelho_pipeline.values import RepositoryWrite, TagChange, TagWrite, ValuesError, aliases_of, read_scalar, set_tags


_FULL_SHA = re.compile(r"[0-9a-f]{40}")


def is_full_sha(text: str) -> bool:
    """Tags the pipeline writes are full commit SHAs; anything else (a branch name, a short SHA that
    git would resolve) is never taken for a delivered commit."""
    return bool(_FULL_SHA.fullmatch(text))


class UnwritableValues(PipelineError):
    """values.yaml cannot take the writes a delivery needs; refused before any image is built."""


def check_writable(values_text: str, apps: Sequence[App], *, source: str, registry: Registry) -> None:
    """Refuses, before anything is built, a values file the delivery could not write.

    Every app needs a plain scalar at ``<app>.image.repository`` and ``<app>.image.tag`` that no
    other key aliases (a write there would change those keys too, silently).
    """
    problems = []
    for app in apps:
        for path, what in ((app.repository_path, f"the pushed repository {registry.repository(app.image)}"),
                           (app.tag_path, "the commit SHA")):
            try:
                read_scalar(values_text, path, source=source)
                aliased = aliases_of(values_text, path, source=source)
            except ValuesError as e:
                problems.append(f"{e} (the pipeline writes {what} there; COELHO_REGISTRY={registry.prefix})")
                continue
            if aliased:
                problems.append(f"{source}: {path} is anchored and aliased by {', '.join(aliased)}: writing "
                                f"{what} there would change those keys too (COELHO_REGISTRY={registry.prefix})")
    if problems:
        raise UnwritableValues("values.yaml cannot be written; nothing was built:\n" +
                               "\n".join(f"- {p}" for p in problems))


def plan_apps(apps: Sequence[App], *, sha: str, deployed_tags: Mapping[str, str | None], remote: GitRemote,
              registry: Registry) -> list[AppPlan]:
    """Whether each app needs a new image for commit ``sha``, given the tag each delivered before it.

    The git questions are asked once per deployed tag, not once per app (most apps share the tag of
    the last delivery that rebuilt them): the catalog's size must not cost a one-app change.
    """
    contexts_by_tag: dict[str, list[str]] = {}
    for app in apps:
        tag = deployed_tags.get(app.name)
        if tag and is_full_sha(tag):
            contexts_by_tag.setdefault(tag, []).append(app.context)
    # tag -> context -> files changed since it; a tag that is not a commit of the branch is absent.
    changed = {tag: remote.changed_under(tag, sha, contexts)
               for tag, contexts in contexts_by_tag.items() if remote.has_commit(tag)}
    why = {app.name: _rebuild_reason(app, deployed_tags.get(app.name), changed) for app in apps}
    kept = [app for app in apps if why[app.name] is None]
    held = registry.digests([(registry.repository(app.image), deployed_tags[app.name]) for app in kept])
    for app, digest in zip(kept, held, strict=True):
        if digest is None:
            why[app.name] = (f"{registry.repository(app.image)}:{deployed_tags[app.name]} is missing from the "
                             "registry (COELHO_REGISTRY)")
    plans = []
    for app in apps:
        tag, reason = deployed_tags.get(app.name), why[app.name]
        plans.append(AppPlan(app.name, tag, reason is not None, reason or f"unchanged since {tag[:12]}",
                             registry.repository(app.image)))
    return plans


def _rebuild_reason(app: App, tag: str | None, changed: Mapping[str, Mapping[str, Sequence[str]]]) -> str | None:
    """Why ``app`` needs a new image, as far as git can tell; None: its image may be kept."""
    if not tag:
        return "never delivered (empty tag in values)"
    if tag not in changed:
        return f"deployed tag {tag!r} is not a commit of the branch"
    if files := changed[tag][app.context]:
        return f"{len(files)} file(s) changed under {app.context}/ since {tag[:12]}"
    return None


def desired_writes(apps: Sequence[App], images: Sequence[ImageRef]) -> tuple[ValueWrite, ...]:
    """Every app's image in values.yaml must be exactly the reference that was pushed.

    Rebuilt apps get their tag and repository; kept apps only their repository (a no-op unless
    COELHO_REGISTRY changed), so the file never names an image the registry does not hold.
    """
    by_app = {image.app: image for image in images}
    writes = []
    for app in apps:
        image = by_app.get(app.name)
        if image is None:
            continue
        if image.new_tag:
            writes.append(ValueWrite(app.name, app.tag_path, image.tag, "tag"))
        writes.append(ValueWrite(app.name, app.repository_path, image.repository, "repository"))
    return tuple(writes)


@dataclass(frozen=True)
class AppliedWrites:
    """The values file after a delivery's writes, what changed, and what was left alone and why."""

    text: str
    changes: tuple[TagChange, ...]
    notes: tuple[str, ...]  # writes left out, and why
    superseded_by: tuple[str, ...]  # newer source commits whose tags were kept
    changed_apps: frozenset[str] = frozenset()  # apps whose image in the file this changes


def apply_writes(values_text: str, writes: Sequence[ValueWrite], *, source_sha: str, source: str,
                 is_newer: Callable[[str], bool]) -> AppliedWrites:
    """Applies ``writes`` to ``values_text`` (the file at the branch tip), except over a newer delivery.

    A tag that already names a descendant of ``source_sha`` (``is_newer``) was written by a newer
    delivery: writing ours would roll that app back, so the app is left as it is.
    """
    kept_apps, notes, newer = set(), [], []
    for write in writes:
        if write.kind != "tag":
            continue
        current = read_scalar(values_text, write.path, source=source)
        if current and current != write.value and is_newer(current):
            kept_apps.add(write.app)
            newer.append(current)
            notes.append(f"{write.path} keeps {current[:12]}: a newer commit than {source_sha[:12]} is already "
                         "delivered")
    edits: list[TagWrite | RepositoryWrite] = [
        TagWrite(w.path, w.value) if w.kind == "tag" else RepositoryWrite(w.path, w.value)
        for w in writes if w.app not in kept_apps
    ]
    text, changes = set_tags(values_text, edits, source=source)
    app_of = {w.path: w.app for w in writes}
    return AppliedWrites(text, tuple(changes), tuple(notes), tuple(dict.fromkeys(newer)),
                         frozenset(app_of[c.path] for c in changes))
