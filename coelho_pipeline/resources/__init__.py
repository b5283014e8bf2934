"""The resources of one delivery target, looked up under that target's keys.

Resources that hold a project's or an environment's settings (its remote, registry, builder
credentials, Argo CD Application, files) are bound once per target, under ``target.name(base)``:
``git`` with a single target, ``git__<project>__<environment>`` with several. Assets and ops list
the keys they need (``required_keys``) and read them through ``TargetResources``, so their code is
the same for one target or many. ``notify`` and ``verification`` are shared by every target.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

    from coelho_pipeline.resources.argocd import ArgoCDResource
    from coelho_pipeline.resources.git import GitResource
    from coelho_pipeline.resources.images import ImageBuilderResource, RegistryResource
    from coelho_pipeline.resources.notify import NotifierResource
    from coelho_pipeline.resources.target import DeliveryTargetResource
    from coelho_pipeline.resources.verify import VerificationResource
    from coelho_pipeline.targets import Target

PER_TARGET = ("git", "registry", "builder", "argocd", "target")
SHARED = ("notify", "verification")


def resource_key(target: Target, base: str) -> str:
    if base in PER_TARGET:
        return target.name(base)
    if base in SHARED:
        return base
    raise KeyError(f"unknown resource {base!r}")


def required_keys(target: Target, *bases: str) -> set[str]:
    """The resource keys an asset or op of ``target`` declares, for the resources it uses."""
    return {resource_key(target, base) for base in bases}


@contextmanager
def sensor_resources(context: dg.SensorEvaluationContext, target: Target, *bases: str) -> Iterator[TargetResources]:
    """``target``'s resources for one sensor tick, built on the instance the process shares.

    For a sensor that declares no resources: were they declared, Dagster would build them, and a new
    DagsterInstance with them, on every tick (coelho_pipeline/instance.py). Here they are the code
    location's own resource definitions, built as Dagster builds them (EnvVar values read then). A
    context made by hand (a test, no repository) gives the resources it was made with.
    """
    import dagster as dg
    from dagster._core.execution.resources_init import get_transitive_required_resource_keys

    from coelho_pipeline.instance import share_instance

    repository = context.repository_def
    if repository is None:
        yield TargetResources(context.resources, target)
        return
    instance = share_instance(context)
    definitions = repository.get_top_level_resources()
    # With the resources they depend on, as Dagster collects a sensor's (none has any today).
    keys = get_transitive_required_resource_keys(required_keys(target, *bases), definitions)
    with dg.build_resources({key: definitions[key] for key in keys}, instance=instance) as built:
        yield TargetResources(built, target)


class TargetResources:
    """``context.resources`` seen from one target: ``.git`` is that target's GitResource."""

    def __init__(self, resources: Any, target: Target) -> None:
        self._resources = resources
        self._target = target

    def _get(self, base: str) -> Any:
        return getattr(self._resources, resource_key(self._target, base))

    @property
    def git(self) -> GitResource:
        return self._get("git")

    @property
    def registry(self) -> RegistryResource:
        return self._get("registry")

    @property
    def builder(self) -> ImageBuilderResource:
        return self._get("builder")

    @property
    def argocd(self) -> ArgoCDResource:
        return self._get("argocd")

    @property
    def target(self) -> DeliveryTargetResource:
        return self._get("target")

    @property
    def notify(self) -> NotifierResource:
        return self._get("notify")

    @property
    def verification(self) -> VerificationResource:
        return self._get("verification")
