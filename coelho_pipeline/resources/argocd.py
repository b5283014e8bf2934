"""Argo CD through the Kubernetes API: read an Application, refresh it, sync it, wait for it.

A thin typed wrapper over the official ``kubernetes`` client, in the style of dagster-k8s'
``DagsterKubernetesClient``: the raw API objects, the clock and the sleeper are injected, every
call returns a frozen dataclass, and API failures become a small hierarchy of typed errors whose
messages name the Application (``namespace/name``) and never carry credentials.

Argo CD has no API of its own here: the Application custom resource (``argoproj.io/v1alpha1``)
is the interface, as Kargo's ``argocd-update`` step uses it. A refresh is an annotation, a sync is
the top-level ``operation`` field, and the verdict "Synced + Healthy at revision X" follows the
A5 procedure of ``argocd-and-peers.md`` (Kargo's checker), including the stale-health guard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import ApiException, AppsV1Api, CustomObjectsApi
from kubernetes.config import ConfigException

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"

# Conditions that mean Argo CD cannot even render or compare the Application (A5 step 1).
ERROR_CONDITIONS = frozenset({"ComparisonError", "InvalidSpecError"})
# Operation phases (A1). "Completed" = Failed, Error, Succeeded.
IN_PROGRESS_PHASES = frozenset({"Running", "Terminating"})
FAILED_PHASES = frozenset({"Failed", "Error"})
# Health values that only need more time (A5 step 5). Unknown is transient during a reconcile.
WAITING_HEALTH = frozenset({"", "Progressing", "Suspended", "Unknown"})
# Health values that are a real problem once the app is at the target revision.
UNHEALTHY = frozenset({"Degraded", "Missing"})
# Status codes worth polling through (dagster-k8s retries the same family).
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ArgoCDError(Exception):
    """Base error; the message names the Application as ``namespace/name``.

    ``status_code`` is the HTTP status of the API failure behind it, if there was one.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling (multiprocess executors, error serialisers).
        return (_rebuild_error, (type(self), self.args, self.__dict__))

    @property
    def transient(self) -> bool:
        """True for failures that another attempt may not see (5xx, 429, connection errors)."""
        return self.status_code is None or self.status_code in TRANSIENT_STATUS


def _rebuild_error(cls: type[ArgoCDError], args: tuple[Any, ...], state: dict[str, Any]) -> ArgoCDError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ApplicationNotFound(ArgoCDError):
    """The Application does not exist (HTTP 404)."""

    @property
    def transient(self) -> bool:
        return False


class ArgoCDPermissionError(ArgoCDError):
    """The API refused the credentials (401) or the ServiceAccount lacks an RBAC verb (403)."""

    @property
    def transient(self) -> bool:
        return False


class SyncFailed(ArgoCDError):
    """Argo CD reported a terminal problem; ``status`` is the AppStatus that showed it.

    Raised for an operation that ended Failed/Error at the target revision, a
    ComparisonError/InvalidSpecError condition, and an Application that is at the target
    revision but still Degraded/Missing when the wait times out.
    """

    def __init__(self, message: str, *, status: AppStatus) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return False


class SyncTimeout(ArgoCDError):
    """The wait ran out; ``status`` is the last AppStatus seen (None if none could be read)."""

    def __init__(self, message: str, *, status: AppStatus | None, timeout: float) -> None:
        super().__init__(message)
        self.status = status
        self.timeout = timeout


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def parse_timestamp(value: object) -> datetime | None:
    """RFC 3339 (``2024-05-01T12:00:00Z``, fractions up to nanoseconds, offsets) -> aware UTC.

    Kubernetes ``metav1.Time`` serialises whole seconds; ``RFC3339Nano`` fields carry up to nine
    fractional digits, which ``fromisoformat`` truncates to microseconds. Anything unparseable
    becomes None rather than an exception: a status field is never worth failing a deploy over.
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


@dataclass(frozen=True)
class AppStatus:
    """What an Application's status says, in one read."""

    name: str
    sync_status: str | None  # Synced / OutOfSync / Unknown
    revision: str | None  # status.sync.revision (first of revisions[] for multi-source)
    health_status: str | None
    health_message: str | None
    operation_phase: str | None  # status.operationState.phase
    operation_message: str | None
    operation_finished_at: datetime | None
    reconciled_at: datetime | None
    conditions: tuple[tuple[str, str], ...] = ()  # (type, message)
    out_of_sync_resources: tuple[str, ...] = ()  # "Kind/namespace/name"
    images: tuple[str, ...] = ()  # status.summary.images
    namespace: str = ""
    # The revision the last operation synced (syncResult.revision) or asked for (operation.sync).
    operation_revision: str | None = None
    operation_started_at: datetime | None = None
    operation_initiated_by: str | None = None
    # Top-level ``operation`` present: requested and not completed yet (Argo CD clears it).
    operation_requested: bool = False
    refresh_requested: str | None = None  # value of the refresh annotation, if still present

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> AppStatus:
        """Parse an Application object as returned by the API (a dict)."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        sync = status.get("sync") or {}
        health = status.get("health") or {}
        op_state = status.get("operationState") or {}
        sync_result = op_state.get("syncResult") or {}
        op_sync = (op_state.get("operation") or {}).get("sync") or {}
        initiated = (op_state.get("operation") or {}).get("initiatedBy") or {}

        revision = sync.get("revision") or _first(sync.get("revisions"))
        op_revision = (
            sync_result.get("revision")
            or _first(sync_result.get("revisions"))
            or op_sync.get("revision")
            or _first(op_sync.get("revisions"))
        )
        conditions = tuple(
            (str(c.get("type") or ""), str(c.get("message") or ""))
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping)
        )
        out_of_sync = tuple(
            f"{r.get('kind', '')}/{r.get('namespace') or ''}/{r.get('name', '')}"
            for r in status.get("resources") or ()
            if isinstance(r, Mapping) and r.get("status") == "OutOfSync"
        )
        images = tuple(str(i) for i in (status.get("summary") or {}).get("images") or ())
        username = initiated.get("username") or ("automated" if initiated.get("automated") else None)
        return cls(
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or ""),
            sync_status=sync.get("status"),
            revision=revision,
            health_status=health.get("status"),
            health_message=health.get("message") or None,
            operation_phase=op_state.get("phase"),
            operation_message=op_state.get("message") or None,
            operation_finished_at=parse_timestamp(op_state.get("finishedAt")),
            reconciled_at=parse_timestamp(status.get("reconciledAt")),
            conditions=conditions,
            out_of_sync_resources=out_of_sync,
            images=images,
            operation_revision=op_revision,
            operation_started_at=parse_timestamp(op_state.get("startedAt")),
            operation_initiated_by=username,
            operation_requested=obj.get("operation") is not None,
            refresh_requested=(meta.get("annotations") or {}).get(REFRESH_ANNOTATION),
        )

    @property
    def operation_in_progress(self) -> bool:
        """An operation was requested and has not completed (or is Running/Terminating)."""
        return self.operation_requested or self.operation_phase in IN_PROGRESS_PHASES

    @property
    def error_conditions(self) -> tuple[tuple[str, str], ...]:
        return tuple(c for c in self.conditions if c[0] in ERROR_CONDITIONS)

    @property
    def health_is_stale(self) -> bool:
        """Health predates the last operation's end (A5 step 2), so it says nothing about it.

        ``reconciledAt < finishedAt`` is stale. Equal timestamps with no fractional part are
        treated as stale too: Kubernetes writes whole seconds, so a comparison made 0.3 s
        *before* the sync finished shows the same second as ``finishedAt``. Calling that stale
        costs one extra refresh; calling it fresh is exactly the kargo#41 race.
        """
        finished = self.operation_finished_at
        if finished is None:
            return False
        reconciled = self.reconciled_at
        if reconciled is None or reconciled < finished:
            return True
        return reconciled == finished and finished.microsecond == 0

    def describe(self) -> str:
        """One line for logs and errors."""
        parts = [
            f"sync={self.sync_status or '-'}",
            f"revision={self.revision or '-'}",
            f"health={self.health_status or '-'}" + (f" ({self.health_message})" if self.health_message else ""),
            f"operation={self.operation_phase or '-'}"
            + (f" ({self.operation_message})" if self.operation_message else ""),
        ]
        if self.operation_revision and self.operation_revision != self.revision:
            parts.append(f"operation_revision={self.operation_revision}")
        if self.operation_requested:
            parts.append("operation_requested=yes")
        parts.append(f"reconciledAt={_fmt(self.reconciled_at)}")
        parts.append(f"finishedAt={_fmt(self.operation_finished_at)}")
        if self.conditions:
            parts.append("conditions=" + "; ".join(f"{t}: {m}" for t, m in self.conditions))
        if self.out_of_sync_resources:
            parts.append("out_of_sync=" + ",".join(self.out_of_sync_resources))
        return f"{self.namespace}/{self.name}: " + " ".join(parts)


@dataclass(frozen=True)
class SyncResult:
    """Outcome of a successful wait."""

    status: AppStatus
    seconds: float


def _first(values: object) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None


def _fmt(ts: datetime | None) -> str:
    return ts.isoformat().replace("+00:00", "Z") if ts else "-"


# ---------------------------------------------------------------------------------------------
# Verdict (A5)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    kind: str  # ok | wait | stale | failed | unhealthy
    reason: str


def assess(status: AppStatus, revision: str) -> _Verdict:
    """One AppStatus -> verdict for "Synced + Healthy at ``revision``" (A5, Kargo's checker).

    Order matters: an operation result is checked before the stale-health guard because the
    phase is not stale information, and the guard runs before revision/sync/health because
    those are exactly what may be stale.
    """
    errors = status.error_conditions
    if errors:
        return _Verdict("failed", "; ".join(f"{t}: {m}" for t, m in errors))
    if status.operation_phase in IN_PROGRESS_PHASES:
        return _Verdict("wait", f"operation {status.operation_phase}")
    if status.operation_requested:
        return _Verdict("wait", "operation requested, not started yet")
    if status.operation_phase in FAILED_PHASES:
        op_rev = status.operation_revision
        if op_rev is None or _same_revision(op_rev, revision):
            return _Verdict(
                "failed",
                f"sync operation {status.operation_phase} at {op_rev or 'an unknown revision'}: "
                f"{status.operation_message or 'no message'}",
            )
        # A failed operation for another revision: a later one may still deliver ours.
        return _Verdict("wait", f"last operation {status.operation_phase} at {op_rev}")
    if status.health_is_stale:
        return _Verdict("stale", "health predates the end of the last operation")
    if not status.revision or not _same_revision(status.revision, revision):
        return _Verdict("wait", f"at revision {status.revision or '-'}")
    if status.operation_phase == "Succeeded" and status.operation_revision and not _same_revision(
        status.operation_revision, revision
    ):
        return _Verdict("wait", f"last sync was at {status.operation_revision}")
    if status.sync_status != "Synced":
        return _Verdict("wait", f"sync status {status.sync_status or '-'}")
    health = status.health_status or ""
    if health == "Healthy":
        return _Verdict("ok", "Synced and Healthy")
    if health in UNHEALTHY:
        return _Verdict("unhealthy", f"health {health}" + (f": {status.health_message}" if status.health_message else ""))
    return _Verdict("wait", f"health {health or '-'}")


def _same_revision(a: str, b: str) -> bool:
    # Full SHAs compare exactly; a short SHA on either side matches as a prefix (>= 7 chars).
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    short, full = sorted((a, b), key=len)
    return len(short) >= 7 and re.fullmatch(r"[0-9a-f]+", short) is not None and full.startswith(short)


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class ArgoCDClient:
    """One Argo CD Application (and the Deployments it manages) through the Kubernetes API.

    Args:
        custom_api: ``CustomObjectsApi`` for ``argoproj.io/v1alpha1`` ``applications``.
        apps_api: ``AppsV1Api`` for Deployments.
        app_name / namespace: the Application (Argo CD's own namespace, usually ``argocd``).
        clock / sleep: injected so tests can run the waits on fake time.
        logger: where progress goes; defaults to this module's logger.
    """

    def __init__(
        self,
        *,
        custom_api: CustomObjectsApi,
        apps_api: AppsV1Api,
        app_name: str,
        namespace: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        self._custom = custom_api
        self._apps = apps_api
        self.app_name = app_name
        self.namespace = namespace
        self._clock = clock
        self._sleep = sleep
        self._log = logger or _log

    @classmethod
    def from_kubeconfig(
        cls,
        *,
        kubeconfig: str | None,
        context: str | None,
        app_name: str,
        namespace: str,
    ) -> ArgoCDClient:
        """Production factory.

        With neither ``kubeconfig`` nor ``context`` and ``KUBERNETES_SERVICE_HOST`` set (running
        in a pod), the ServiceAccount token is used (``load_incluster_config``). Otherwise the
        kubeconfig file (``None`` = ``$KUBECONFIG`` or ``~/.kube/config``) and context.
        """
        configuration = k8s_client.Configuration()
        in_cluster = not kubeconfig and not context and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(
                    config_file=kubeconfig or None,
                    context=context or None,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError) as e:
            where = (
                "the in-cluster ServiceAccount (KUBERNETES_SERVICE_HOST is set)"
                if in_cluster
                else f"kubeconfig {kubeconfig or '(default)'}" + (f", context {context}" if context else "")
            )
            raise ArgoCDError(
                f"Application {namespace}/{app_name}: cannot load cluster credentials from {where}: "
                f"{type(e).__name__}: {_first_line(str(e))}"
            ) from e
        api_client = k8s_client.ApiClient(configuration)
        return cls(
            custom_api=CustomObjectsApi(api_client),
            apps_api=AppsV1Api(api_client),
            app_name=app_name,
            namespace=namespace,
        )

    # -- context ---------------------------------------------------------------------------

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.app_name}"

    def close(self) -> None:
        """Close the HTTP pools of the underlying ApiClient(s)."""
        seen: set[int] = set()
        for api in (self._custom, self._apps):
            api_client = getattr(api, "api_client", None)
            if api_client is not None and id(api_client) not in seen:
                seen.add(id(api_client))
                api_client.close()

    def __enter__(self) -> ArgoCDClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------

    def get(self) -> dict[str, Any]:
        """The raw Application object (for callers that need spec fields)."""
        obj = self._call(
            "get",
            "applications.argoproj.io",
            lambda: self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.app_name),
        )
        if not isinstance(obj, dict):
            raise ArgoCDError(f"Application {self.qualified_name}: unexpected API answer {type(obj).__name__}")
        return obj

    def status(self) -> AppStatus:
        """Read the Application once."""
        return AppStatus.from_object(self.get())

    def deployment_images(self, *, namespace: str, label_selector: str | None = None) -> dict[str, tuple[str, ...]]:
        """Deployment name -> container images (``spec.template.spec.containers[].image``).

        The selector is sent to the API and applied again here: the API emulator used in tests
        ignores selectors, and a client-side check costs nothing on a real apiserver.
        """
        selector = LabelSelector.parse(label_selector) if label_selector else None  # ValueError if malformed
        result = self._call(
            "list",
            "deployments.apps",
            lambda: self._apps.list_namespaced_deployment(namespace, label_selector=label_selector or None),
            namespace=namespace,
            not_found_is_app=False,
        )
        images: dict[str, tuple[str, ...]] = {}
        for dep in result.items or ():
            labels = dict(dep.metadata.labels or {}) if dep.metadata else {}
            if selector is not None and not selector.matches(labels):
                continue
            pod_spec = dep.spec.template.spec if dep.spec and dep.spec.template else None
            containers = (pod_spec.containers if pod_spec else None) or ()
            images[dep.metadata.name] = tuple(c.image or "" for c in containers)
        return dict(sorted(images.items()))

    # -- writes ----------------------------------------------------------------------------

    def refresh(self, *, hard: bool = False) -> None:
        """Ask Argo CD to re-compare Git with the cluster (A2); it removes the annotation when done."""
        body = {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard" if hard else "normal"}}}
        self._patch(body, purpose="request a refresh")
        self._log.debug("Application %s: %s refresh requested", self.qualified_name, "hard" if hard else "normal")

    def refresh_and_read(self, *, hard: bool = False, timeout: float = 60.0, poll_interval: float = 1.0) -> AppStatus:
        """Request a refresh and return the status of the comparison it produced (A6).

        A sync/drift verdict is only as fresh as ``reconciledAt``. Done = Argo CD removed the
        annotation (its completion signal) and ``reconciledAt`` moved past the value read before
        the request; an unchanged whole-second value is accepted too, since Kubernetes
        timestamps cannot show a second comparison within the same second.

        Raises:
            SyncTimeout: the refresh did not complete within ``timeout``; ``.status`` is the last read.
        """
        before = self.status().reconciled_at
        self.refresh(hard=hard)
        start = self._clock()
        while True:
            st = self.status()
            reconciled = st.reconciled_at
            if st.refresh_requested is None and reconciled is not None and (
                before is None
                or reconciled > before
                or (reconciled == before and reconciled.microsecond == 0)
            ):
                return st
            elapsed = self._clock() - start
            if elapsed >= timeout:
                raise SyncTimeout(
                    f"Application {self.qualified_name}: Argo CD did not complete the requested refresh within "
                    f"{timeout:g}s (reconciledAt before the request: {_fmt(before)}); last status: {st.describe()}",
                    status=st,
                    timeout=timeout,
                )
            self._sleep(min(poll_interval, max(timeout - elapsed, 0.0)))

    def sync(
        self,
        *,
        revision: str,
        initiated_by: str = "coelho-pipeline",
        info: Mapping[str, str] = {},  # noqa: B006 - read only
        timeout: float = 300.0,
        poll_interval: float = 1.0,
    ) -> None:
        """Request a sync of ``revision`` through the ``operation`` field (A3), as Kargo does.

        Copies ``spec.syncPolicy.syncOptions`` and ``spec.syncPolicy.retry`` into the operation
        and nulls ``status.operationState`` in the same merge patch (argo-cd#20875; without it a
        previous operation's state can survive and be read as ours). If another operation is
        requested or Running, waits up to ``timeout`` seconds for it to complete first: a merge
        patch would otherwise blend our request into it.

        Raises:
            SyncTimeout: the other operation did not complete in time.
            ApplicationNotFound / ArgoCDPermissionError / ArgoCDError: from the API.
        """
        obj = self._wait_for_foreign_operation(timeout=timeout, poll_interval=poll_interval)
        sync_policy = (obj.get("spec") or {}).get("syncPolicy") or {}
        sync: dict[str, Any] = {"revision": revision}
        if sync_policy.get("syncOptions"):
            sync["syncOptions"] = list(sync_policy["syncOptions"])
        operation: dict[str, Any] = {
            "initiatedBy": {"username": initiated_by},
            "info": [{"name": str(k), "value": str(v)} for k, v in info.items()],
            "sync": sync,
        }
        if not operation["info"]:
            del operation["info"]
        if sync_policy.get("retry"):
            operation["retry"] = sync_policy["retry"]
        self._patch({"operation": operation, "status": {"operationState": None}}, purpose="request a sync")
        self._log.info("Application %s: sync of %s requested by %s", self.qualified_name, revision, initiated_by)

    def wait_synced(self, *, revision: str, timeout: float, poll_interval: float = 1.0) -> SyncResult:
        """Poll until the Application is Synced and Healthy at ``revision`` (A5).

        Per read: an error condition fails at once; a requested/Running/Terminating operation
        waits; an operation that ended Failed/Error at ``revision`` fails with its message;
        health older than the operation's end (stale-health guard) requests a refresh and waits;
        then revision, Synced, operation Succeeded at ``revision`` and Healthy must all hold.
        Progressing/Suspended/Unknown/empty health waits.

        Degraded/Missing at the target revision is *not* failed at once: pods that are still
        starting (image pull, readiness probes with long initial delays) report Degraded for a
        while and recover. The wait goes on; if the deadline passes with the app still
        Degraded/Missing at ``revision``, ``SyncFailed`` is raised (the release is deployed and
        unhealthy, a terminal verdict) and its message says it timed out and shows the health.
        Transient API errors (5xx, 429, connection errors) are polled through until the deadline.

        Raises:
            SyncFailed: operation Failed/Error, error condition, or still Degraded/Missing at
                the deadline; ``.status`` is the AppStatus that showed it.
            SyncTimeout: deadline passed otherwise; ``.status`` is the last AppStatus seen.
            ApplicationNotFound / ArgoCDPermissionError: not worth waiting on.
        """
        start = self._clock()
        deadline = start + timeout
        last: AppStatus | None = None
        verdict: _Verdict | None = None
        last_reason: str | None = None
        last_error: ArgoCDError | None = None
        while True:
            try:
                st = self.status()
            except ArgoCDError as e:
                if not e.transient:
                    raise
                last_error = e
                self._log.warning("Application %s: transient API error while waiting: %s", self.qualified_name, e)
            else:
                last, last_error = st, None
                verdict = assess(st, revision)
                if verdict.reason != last_reason:
                    self._log.info("Application %s: %s [%s]", self.qualified_name, verdict.reason, st.describe())
                    last_reason = verdict.reason
                if verdict.kind == "ok":
                    return SyncResult(status=st, seconds=self._clock() - start)
                if verdict.kind == "failed":
                    raise SyncFailed(
                        f"Application {self.qualified_name} failed to sync {revision}: {verdict.reason} "
                        f"[{st.describe()}]",
                        status=st,
                    )
                if verdict.kind == "stale" and not st.refresh_requested:
                    self.refresh()
            now = self._clock()
            if now >= deadline:
                break
            self._sleep(min(poll_interval, max(deadline - now, 0.0)))

        if last is not None and verdict is not None and verdict.kind == "unhealthy":
            raise SyncFailed(
                f"Application {self.qualified_name} is at {revision} but still {verdict.reason} "
                f"after the {timeout:g}s timeout [{last.describe()}]",
                status=last,
            )
        seen = last.describe() if last is not None else "no status could be read"
        why = f"; last API error: {last_error}" if last_error is not None else ""
        waiting_on = f" (waiting on: {verdict.reason})" if verdict is not None else ""
        raise SyncTimeout(
            f"Application {self.qualified_name} did not become Synced+Healthy at {revision} within "
            f"{timeout:g}s{waiting_on}; last status: {seen}{why}",
            status=last,
            timeout=timeout,
        )

    # -- internals -------------------------------------------------------------------------

    def _wait_for_foreign_operation(self, *, timeout: float, poll_interval: float) -> dict[str, Any]:
        start = self._clock()
        announced = False
        while True:
            obj = self.get()
            st = AppStatus.from_object(obj)
            if not st.operation_in_progress:
                return obj
            if not announced:
                self._log.info(
                    "Application %s: waiting for the operation by %s to finish before syncing [%s]",
                    self.qualified_name,
                    _initiator(obj) or st.operation_initiated_by or "someone",
                    st.describe(),
                )
                announced = True
            elapsed = self._clock() - start
            if elapsed >= timeout:
                raise SyncTimeout(
                    f"Application {self.qualified_name}: another operation (initiated by "
                    f"{_initiator(obj) or st.operation_initiated_by or 'unknown'}) is still in progress "
                    f"after {timeout:g}s; last status: {st.describe()}",
                    status=st,
                    timeout=timeout,
                )
            self._sleep(min(poll_interval, max(timeout - elapsed, 0.0)))

    def _patch(self, body: Mapping[str, Any], *, purpose: str) -> None:
        self._call(
            "patch",
            "applications.argoproj.io",
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.app_name,
                body,
                _content_type="application/merge-patch+json",
            ),
            purpose=purpose,
        )

    def _call(
        self,
        verb: str,
        resource: str,
        fn: Callable[[], Any],
        *,
        namespace: str | None = None,
        not_found_is_app: bool = True,
        purpose: str | None = None,
    ) -> Any:
        ns = namespace or self.namespace
        try:
            return fn()
        except ApiException as e:
            raise self._translate(
                e, verb=verb, resource=resource, namespace=ns, not_found_is_app=not_found_is_app, purpose=purpose
            ) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ArgoCDError(
                f"Application {self.qualified_name}: cannot reach the Kubernetes API to {verb} {resource} "
                f"in namespace {ns}: {type(e).__name__}: {_first_line(str(e))}"
            ) from e

    def _translate(
        self,
        e: ApiException,
        *,
        verb: str,
        resource: str,
        namespace: str,
        not_found_is_app: bool,
        purpose: str | None,
    ) -> ArgoCDError:
        code = e.status
        detail = _api_message(e)
        why = f" (needed to {purpose})" if purpose else ""
        if code == 404 and not_found_is_app:
            return ApplicationNotFound(
                f"Application {self.qualified_name} not found (no {resource} named {self.app_name!r} "
                f"in namespace {namespace!r})",
                status_code=404,
            )
        http = f"HTTP {code} {e.reason}" if e.reason else f"HTTP {code}"
        suffix = f": {detail}" if detail else ""
        if code in (401, 403):
            what = (
                "the API rejected the credentials (the ServiceAccount token is invalid or expired) and so lacks "
                "permission"
                if code == 401
                else "the ServiceAccount lacks permission"
            )
            return ArgoCDPermissionError(
                f"Application {self.qualified_name}: {what} to {verb} {resource} in namespace {namespace}{why} "
                f"({http}){suffix}",
                status_code=code,
            )
        return ArgoCDError(
            f"Application {self.qualified_name}: {verb} {resource} in namespace {namespace}{why} failed: "
            f"{http}{suffix}",
            status_code=code,
        )


def _api_message(e: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, one line, bounded; never headers."""
    try:
        body = json.loads(e.body) if e.body else None
    except (TypeError, ValueError):
        return ""
    msg = body.get("message") if isinstance(body, dict) else None
    return _first_line(msg)[:300] if isinstance(msg, str) else ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def _initiator(obj: Mapping[str, Any]) -> str | None:
    by = (obj.get("operation") or {}).get("initiatedBy") or {}
    return by.get("username") or ("automated" if by.get("automated") else None)


# ---------------------------------------------------------------------------------------------
# Label selectors (client-side)
# ---------------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


@dataclass(frozen=True)
class LabelSelector:
    """A parsed Kubernetes label selector (equality- and set-based), matched client-side."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...]  # (key, op, values)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        reqs: list[tuple[str, str, frozenset[str]]] = []
        for term in _split_terms(text):
            if m := _SET_RE.match(term):
                values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
                reqs.append((m.group(1), m.group(2), values))
            elif m := _EQ_RE.match(term):
                reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset({m.group(3)})))
            elif m := _EXISTS_RE.match(term):
                reqs.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
            else:
                raise ValueError(f"invalid label selector term {term!r} in {text!r}")
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.requirements:
            present = key in labels
            value = labels.get(key)
            ok = {
                "=": present and value in values,
                "!=": not present or value not in values,
                "in": present and value in values,
                "notin": not present or value not in values,
                "exists": present,
                "!exists": not present,
            }[op]
            if not ok:
                return False
        return True


def _split_terms(text: str) -> Iterable[str]:
    depth, current = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            yield "".join(current)
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        yield "".join(current)


# ---------------------------------------------------------------------------------------------
# Dagster resource
# ---------------------------------------------------------------------------------------------


class ArgoCDResource(dg.ConfigurableResource):
    """The Argo CD Application the pipeline drives.

    Wired from KUBECONFIG, COELHO_KUBE_CONTEXT, COELHO_ARGOCD_APP, COELHO_ARGOCD_NAMESPACE and
    COELHO_SYNC_TIMEOUT. With no kubeconfig, no context and no in-cluster environment there is
    no cluster, and ``client()`` returns None so assets can skip the hand-off explicitly.
    """

    app_name: str = "coelho-realtime"
    namespace: str = "argocd"
    kubeconfig: str | None = None
    context: str | None = None
    sync_timeout_seconds: float = 600

    @property
    def cluster_configured(self) -> bool:
        return bool(self.kubeconfig or self.context or os.environ.get("KUBERNETES_SERVICE_HOST"))

    def client(self) -> ArgoCDClient | None:
        """A client for the configured Application, or None when no cluster is configured."""
        if not self.cluster_configured:
            return None
        return ArgoCDClient.from_kubeconfig(
            kubeconfig=self.kubeconfig or None,
            context=self.context or None,
            app_name=self.app_name,
            namespace=self.namespace,
        )
