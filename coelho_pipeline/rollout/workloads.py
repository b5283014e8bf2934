"""Deployments and their Pods through the Kubernetes API, as the rollout verification reads them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3

from coelho_pipeline.errors import PipelineError, http_status_is_transient
from coelho_pipeline.kube import api_message, first_line, timeout_cause, timeout_phase

if TYPE_CHECKING:  # imported where a reader is made: most processes never need the kubernetes package
    from kubernetes.client import ApiClient


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
    """Reads Deployments and Pods; every request carries ``request_timeout`` ``(connect, read)``."""

    def __init__(self, api_client: ApiClient, *, request_timeout: tuple[float, float]) -> None:
        from kubernetes.client import AppsV1Api, CoreV1Api

        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self.request_timeout = request_timeout

    def deployment(self, namespace: str, name: str) -> DeploymentState:
        dep = self._call("get", f"Deployment {namespace}/{name}", lambda: self._apps.read_namespaced_deployment(
            name, namespace, _request_timeout=self.request_timeout))
        return deployment_state(dep, namespace=namespace, name=name)

    def restarts(self, deployment: DeploymentState) -> tuple[ContainerRestarts, ...]:
        """Restart counts of every container in the Deployment's Pods (matched by its selector)."""
        if not deployment.selector:
            # Without matchLabels the list would be every Pod of the namespace: counted wrong, so not at all.
            raise WorkloadError(f"Deployment {deployment.ref} selects its Pods without spec.selector.matchLabels; "
                                "its restarts cannot be counted", transient=False)
        selector = ",".join(f"{k}={v}" for k, v in sorted(deployment.selector.items()))
        pods = self._call("list", f"Pods of Deployment {deployment.ref}", lambda: self._core.list_namespaced_pod(
            deployment.namespace, label_selector=selector or None, _request_timeout=self.request_timeout))
        counts = []
        for pod in pods.items or ():
            labels = (pod.metadata.labels if pod.metadata else None) or {}
            # The API server applies the selector; checked again so a server that ignores it cannot mislead.
            if any(labels.get(k) != v for k, v in deployment.selector.items()):
                continue
            for status in ((pod.status.container_statuses if pod.status else None) or ()):
                counts.append(ContainerRestarts(pod.metadata.name, status.name, int(status.restart_count or 0)))
        return tuple(sorted(counts, key=lambda c: c.ref))

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
