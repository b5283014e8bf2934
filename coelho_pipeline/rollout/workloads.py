"""Deployments and their Pods through the Kubernetes API, as the rollout verification reads them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3

from coelho_pipeline.errors import PipelineError, http_status_is_transient
from coelho_pipeline.kube import api_message, first_line, timeout_cause, timeout_phase

if TYPE_CHECKING:  # imported where a reader is made: most processes never need the kubernetes package
    from kubernetes.client import ApiClient


T = TypeVar("T")


class WorkloadError(PipelineError):
    """A Deployment or Pod read failed; the message names the object and the verb."""


@dataclass(frozen=True)
class DeploymentState:
    """What the Deployment controller reports about one rollout.

    Complete as ``kubectl rollout status`` judges it: the controller has observed this generation,
    every wanted replica is updated, no old replica is left, and every updated one is available.
    """

    namespace: str
    name: str
    generation: int
    observed_generation: int
    replicas: int  # spec.replicas: what is wanted
    updated: int
    current: int  # status.replicas: every Pod of the Deployment, old ones still terminating included
    available: int
    ready: int
    selector: Mapping[str, str]
    progress_deadline_exceeded: str | None  # the condition's message when the rollout gave up

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def gave_up(self) -> bool:
        """The controller gave up on this generation's rollout (a condition from an older one does not count)."""
        return self.progress_deadline_exceeded is not None and self.observed_generation >= self.generation

    def problem(self) -> str | None:
        """Why this rollout is not complete, or None when every wanted replica is new and available."""
        if self.observed_generation < self.generation:
            return (f"Deployment {self.ref} generation {self.generation} not yet observed by its controller "
                    f"(observedGeneration {self.observed_generation})")
        if self.gave_up:
            return f"Deployment {self.ref} exceeded its progress deadline: {self.progress_deadline_exceeded}"
        if self.updated < self.replicas:
            return f"Deployment {self.ref}: {self.updated} of {self.replicas} replicas updated"
        if self.current > self.updated:
            return (f"Deployment {self.ref}: {self.current - self.updated} old replica(s) pending termination "
                    f"({self.updated} updated)")
        if self.available < max(self.updated, self.replicas):
            return f"Deployment {self.ref}: {self.available} of {self.updated} updated replicas available"
        return None


@dataclass(frozen=True)
class ContainerRestarts:
    pod: str
    container: str
    restarts: int

    @property
    def ref(self) -> str:
        return f"{self.pod}/{self.container}"


class WorkloadReader:
    """Reads Deployments and Pods; every request carries ``request_timeout`` ``(connect, read)``.

    Reads are batched per namespace: one list of Deployments and one list of Pods cover every
    Deployment of a release, so a verification costs the same few calls at 3 apps as at 30.
    """

    def __init__(self, api_client: ApiClient, *, request_timeout: tuple[float, float]) -> None:
        from kubernetes.client import AppsV1Api, CoreV1Api

        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self.request_timeout = request_timeout

    def deployments(self, refs: Sequence[tuple[str, str]]) -> tuple[DeploymentState, ...]:
        """The state of each ``(namespace, name)``, in the order asked."""
        found: dict[tuple[str, str], DeploymentState] = {}
        for namespace, group in _grouped(refs, lambda ref: ref[0]).items():
            names = [name for _, name in group]
            what = f"Deployments in namespace {namespace} (for {_naming(namespace, names)})"
            listed = self._call("list", what, lambda namespace=namespace: self._apps.list_namespaced_deployment(
                namespace, _request_timeout=self.request_timeout))
            for dep in listed.items or ():
                name = dep.metadata.name if dep.metadata else None
                if name in names:
                    found[(namespace, name)] = deployment_state(dep, namespace=namespace, name=name)
        missing = [f"{ns}/{name}" for ns, name in refs if (ns, name) not in found]
        if missing:
            raise WorkloadError(f"Deployment {', '.join(missing)} not found (the Application lists it)",
                                transient=False)
        return tuple(found[ref] for ref in refs)

    def container_restarts(self, deployments: Sequence[DeploymentState]) -> dict[str, tuple[ContainerRestarts, ...]]:
        """Restart counts of every container in each Deployment's Pods (matched by its selector), by ref."""
        for deployment in deployments:
            if not deployment.selector:
                # Without matchLabels every Pod of the namespace would match: counted wrong, so not at all.
                raise WorkloadError(f"Deployment {deployment.ref} selects its Pods without "
                                    "spec.selector.matchLabels; its restarts cannot be counted", transient=False)
        counts: dict[str, list[ContainerRestarts]] = {d.ref: [] for d in deployments}
        for namespace, group in _grouped(deployments, lambda d: d.namespace).items():
            # The labels every selector shares narrow the list; each Pod is then matched to its Deployment.
            shared = set.intersection(*(set(d.selector.items()) for d in group))
            selector = ",".join(f"{k}={v}" for k, v in sorted(shared))
            what = f"Pods in namespace {namespace} (of {_naming(namespace, [d.name for d in group])})"
            pods = self._call("list", what, lambda namespace=namespace, selector=selector:
                              self._core.list_namespaced_pod(namespace, label_selector=selector or None,
                                                             _request_timeout=self.request_timeout))
            for pod in pods.items or ():
                labels = (pod.metadata.labels if pod.metadata else None) or {}
                for deployment in group:
                    if all(labels.get(k) == v for k, v in deployment.selector.items()):
                        for status in ((pod.status.container_statuses if pod.status else None) or ()):
                            counts[deployment.ref].append(
                                ContainerRestarts(pod.metadata.name, status.name, int(status.restart_count or 0)))
        return {ref: tuple(sorted(found, key=lambda c: c.ref)) for ref, found in counts.items()}

    def _call(self, verb: str, what: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client import ApiException

        try:
            return fn()
        except ApiException as e:
            detail = api_message(e)
            raise WorkloadError(f"{verb} {what} failed: HTTP {e.status}" + (f": {detail}" if detail else ""),
                                transient=http_status_is_transient(e.status)) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            timed_out = timeout_cause(e)
            if timed_out is not None:
                phase = timeout_phase(timed_out)
                bound = self.request_timeout[0 if phase == "connect" else 1]
                raise WorkloadError(f"the Kubernetes API did not answer {verb} {what} within the {bound:g}s "
                                    f"{phase} timeout", transient=True) from e
            raise WorkloadError(f"cannot reach the Kubernetes API to {verb} {what}: {type(e).__name__}: "
                                f"{first_line(str(e))}", transient=True) from e


def _grouped(items: Iterable[T], namespace: Callable[[T], str]) -> dict[str, list[T]]:
    grouped: dict[str, list[T]] = {}
    for item in items:
        grouped.setdefault(namespace(item), []).append(item)
    return grouped


def _naming(namespace: str, names: Sequence[str]) -> str:
    """``ns/a, ns/b and 28 more``: what a list call was for, short enough for one error line."""
    shown = ", ".join(f"{namespace}/{name}" for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def deployment_state(dep: Any, *, namespace: str, name: str) -> DeploymentState:
    """A ``V1Deployment`` as the verification judges it; absent fields read as "not there yet"."""
    meta, spec, status = dep.metadata, dep.spec, dep.status
    deadline = None
    for condition in ((status.conditions if status else None) or ()):
        if condition.type == "Progressing" and condition.status == "False" \
                and condition.reason == "ProgressDeadlineExceeded":
            deadline = condition.message or "ProgressDeadlineExceeded"
    match_labels = (spec.selector.match_labels if spec and spec.selector else None) or {}
    return DeploymentState(
        namespace=namespace, name=name,
        generation=int((meta.generation if meta else None) or 0),
        observed_generation=int((status.observed_generation if status else None) or 0),
        replicas=int(spec.replicas if spec and spec.replicas is not None else 1),
        updated=int((status.updated_replicas if status else None) or 0),
        current=int((status.replicas if status else None) or 0),
        available=int((status.available_replicas if status else None) or 0),
        ready=int((status.ready_replicas if status else None) or 0),
        selector=dict(match_labels),
        progress_deadline_exceeded=deadline,
    )
