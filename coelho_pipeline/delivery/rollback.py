"""A rollback: a new commit that writes back every app's image as an earlier delivery deployed it."""

from __future__ import annotations

from coelho_pipeline.delivery.publish import Publication
from coelho_pipeline.delivery.values_file import read_values
from coelho_pipeline.domain import ValueWrite
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.resources.images import Registry
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import read_scalar


class RollbackRefused(PipelineError):
    """The commit rolled back to was never delivered, or its images are gone; nothing is written."""


def rollback_publication(remote: GitRemote, *, old_sha: str, delivered_at: str, target: DeliveryTargetResource,
                         registry: Registry) -> Publication:
    """The writes that bring back what the delivery of ``old_sha`` left in values.yaml at ``delivered_at``.

    Refused, naming each, when an app had no image then or its image is no longer in the registry:
    a rollback must land on something that runs.
    """
    text = read_values(remote, delivered_at, target.values_path)
    writes: list[ValueWrite] = []
    problems: list[str] = []
    for app in target.catalog():
        repository = read_scalar(text, app.repository_path, source=target.values_path) or ""
        tag = read_scalar(text, app.tag_path, source=target.values_path) or ""
        if not tag or not repository:
            problems.append(f"{app.tag_path} was empty at {delivered_at[:12]}: that delivery deployed no {app.name}")
            continue
        if registry.digest(repository, tag) is None:
            problems.append(f"{repository}:{tag} ({app.name}) is gone from the registry")
            continue
        writes += [ValueWrite(app.name, app.tag_path, tag, "tag"),
                   ValueWrite(app.name, app.repository_path, repository, "repository")]
    if problems:
        raise RollbackRefused(f"cannot roll back to {old_sha}; nothing written:\n" +
                              "\n".join(f"- {p}" for p in problems))
    rolled_back_from = remote.last_delivered_source() or "unknown"
    return Publication(old_sha, tuple(writes), f"Roll back to {old_sha}",
                       trailers=(("Rolled-Back-From", rolled_back_from),), rollback=True)
