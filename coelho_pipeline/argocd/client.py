"""One Argo CD Application through the Kubernetes API: read, refresh, sync, wait.

A thin typed wrapper over the official ``kubernetes`` client, in the style of dagster-k8s'
``DagsterKubernetesClient``: the raw API objects, the clock and the sleeper are injected, every
call returns a frozen dataclass, and API failures become typed errors whose messages name the
Application (``namespace/name``) and never carry credentials.

Argo CD has no API of its own here: the Application custom resource is the interface (no Argo CD
server or CLI credentials are needed, only RBAC on Applications). A refresh is an annotation, a sync is the top-level ``operation``
field. Every request carries ``_request_timeout``: a hung API server becomes a transient error
naming the verb and the bound, never a step that waits forever.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
import yaml

from coelho_pipeline.argocd.errors import (
    ApplicationNotFound,
    ArgoCDError,
    ArgoCDPermissionError,
    KubeconfigError,
    SyncFailed,
    SyncTimeout,
)
from coelho_pipeline.argocd.status import REFRESH_ANNOTATION, AppStatus, SyncResult, _fmt, parse_timestamp
from coelho_pipeline.argocd.verdict import Acceptance, Verdict, assess
from coelho_pipeline.kube import api_message, first_line, timeout_cause, timeout_phase

if TYPE_CHECKING:  # the kubernetes package takes ~0.4 s to import: loaded when a client is made
    from kubernetes.client import ApiClient, ApiException, AppsV1Api, CustomObjectsApi

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
# The sync wait reads every FAST_POLL_SECONDS for its first FAST_PHASE_SECONDS, then backs off
# (see wait_synced).
FAST_POLL_SECONDS = 0.1
FAST_PHASE_SECONDS = 2.0

# (connect, read) seconds for every Kubernetes API request. Reads of one object answer in
# milliseconds; the read bound is generous for a loaded apiserver and still far below a sync wait.
DEFAULT_REQUEST_TIMEOUT: tuple[float, float] = (5.0, 15.0)

_log = logging.getLogger(__name__)


class ArgoCDClient:
    """One Argo CD Application (and the Deployments it manages) through the Kubernetes API.

    Args:
        custom_api: ``CustomObjectsApi`` for ``argoproj.io/v1alpha1`` ``applications``.
        apps_api: ``AppsV1Api`` for Deployments.
        app_name / namespace: the Application (Argo CD's own namespace, usually ``argocd``).
        clock / sleep: injected so tests can run the waits on fake time.
        logger: where progress goes; defaults to this module's logger.
        request_timeout: ``(connect, read)`` seconds passed to every API request.
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
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._custom = custom_api
        self._apps = apps_api
        self.app_name = app_name
        self.namespace = namespace
        self._clock = clock
        self._sleep = sleep
        self._log = logger or _log
        self.request_timeout = request_timeout

    @classmethod
    def from_kubeconfig(
        cls,
        *,
        kubeconfig: str | None,
        context: str | None,
        app_name: str,
        namespace: str,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> ArgoCDClient:
        """Production factory.

        With neither ``kubeconfig`` nor ``context`` and ``KUBERNETES_SERVICE_HOST`` set (running
        in a pod), the ServiceAccount token is used (``load_incluster_config``). Otherwise the
        kubeconfig file(s) (``None`` = ``$KUBECONFIG`` or ``~/.kube/config``) and context.

        Raises:
            KubeconfigError: the file is unreadable, not YAML, defines no cluster, or names no
                usable context; the message names the path (never the file's content).
        """
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        configuration = k8s_client.Configuration()
        in_cluster = not kubeconfig and not context and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        qualified = f"{namespace}/{app_name}"
        if in_cluster:
            where = "the in-cluster ServiceAccount (KUBERNETES_SERVICE_HOST is set)"
        else:
            paths = kubeconfig_paths(kubeconfig)
            check_kubeconfig(paths, application=qualified)
            where = f"kubeconfig {os.pathsep.join(paths)}" + (f", context {context}" if context else "")
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
        except (k8s_config.ConfigException, OSError) as e:
            raise KubeconfigError(
                f"Application {qualified}: cannot load cluster credentials from {where}: "
                f"{type(e).__name__}: {first_line(str(e))}"
            ) from e
        except Exception as e:  # noqa: BLE001 - a malformed entry surfaces as any type; its text may quote the file
            raise KubeconfigError(
                f"Application {qualified}: cannot load cluster credentials from {where}: malformed entry "
                f"({type(e).__name__})"
            ) from None
        # No hidden urllib3 retries: a hung GET would otherwise take four read timeouts, and the
        # waits below already poll through transient errors on their own clock.
        configuration.retries = False
        api_client = k8s_client.ApiClient(configuration)
        return cls(
            custom_api=k8s_client.CustomObjectsApi(api_client),
            apps_api=k8s_client.AppsV1Api(api_client),
            app_name=app_name,
            namespace=namespace,
            request_timeout=request_timeout,
        )

    # -- context ---------------------------------------------------------------------------

    @property
    def api_client(self) -> ApiClient:
        """The Kubernetes API connection, for readers of other objects (the rollout's Deployments)."""
        return self._apps.api_client

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
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.app_name, _request_timeout=self.request_timeout
            ),
        )
        if not isinstance(obj, dict):
            raise ArgoCDError(f"Application {self.qualified_name}: unexpected API answer {type(obj).__name__}")
        return obj

    def status(self) -> AppStatus:
        """Read the Application once."""
        return AppStatus.from_object(self.get())

    def deployment_images(self, *, namespace: str, label_selector: str | None = None) -> dict[str, tuple[str, ...]]:
        """Deployment name -> container images (``spec.template.spec.containers[].image``).

        ``label_selector`` is applied by the API server.
        """
        result = self._call(
            "list",
            "deployments.apps",
            lambda: self._apps.list_namespaced_deployment(
                namespace, label_selector=label_selector or None, _request_timeout=self.request_timeout
            ),
            namespace=namespace,
            not_found_is_app=False,
        )
        images: dict[str, tuple[str, ...]] = {}
        for dep in result.items or ():
            pod_spec = dep.spec.template.spec if dep.spec and dep.spec.template else None
            containers = (pod_spec.containers if pod_spec else None) or ()
            images[dep.metadata.name] = tuple(c.image or "" for c in containers)
        return dict(sorted(images.items()))

    def history(self) -> tuple[HistoryEntry, ...]:
        """``status.history``, oldest first, from one read."""
        return history_from_object(self.get())

    def resources(self) -> tuple[ResourceState, ...]:
        """``status.resources`` (what Argo CD manages, with sync status and health), from one read."""
        return resources_from_object(self.get())

    def read_path(self, path: str, *, resource: str, namespace: str | None = None,
                  query: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """GET any Kubernetes API path (an object or a list) as a dict; None when it does not exist (404).

        For reads outside Applications and Deployments (the runbook's diff reads every kind the
        chart renders); same timeout and error translation as every other call here.
        """
        api_client = self._custom.api_client
        try:
            obj = self._call(
                "get",
                resource,
                lambda: api_client.call_api(
                    path, "GET", query_params=list((query or {}).items()),
                    header_params={"Accept": "application/json"}, response_types_map={200: "object"},
                    auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=True,
                    _request_timeout=self.request_timeout,
                ),
                namespace=namespace or "-",
                not_found_is_app=False,
            )
        except ArgoCDError as e:
            if e.status_code == 404:
                return None
            raise
        if not isinstance(obj, dict):
            raise ArgoCDError(f"Application {self.qualified_name}: GET {path}: unexpected API answer "
                              f"{type(obj).__name__}")
        return obj

    # -- writes ----------------------------------------------------------------------------

    def refresh(self, *, hard: bool = False) -> None:
        """Ask Argo CD to re-compare Git with the cluster ; it removes the annotation when done."""
        body = {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard" if hard else "normal"}}}
        self._patch(body, purpose="request a refresh")
        self._log.debug("Application %s: %s refresh requested", self.qualified_name, "hard" if hard else "normal")

    def refresh_and_read(self, *, hard: bool = False, timeout: float = 60.0, poll_interval: float = 0.25) -> AppStatus:
        """Request a refresh and return the status of the comparison it produced.

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
        poll_interval: float = 0.5,
        force: bool = False,
    ) -> None:
        """Request a sync of ``revision`` through the ``operation`` field, the way the Argo CD CLI does.

        ``force=True`` is ``argocd app sync --force`` plus ``--replace``: ``Replace=true`` is added to
        the sync options and ``syncStrategy.apply.force`` is set, so objects that an apply cannot
        patch (immutable fields) are deleted and created again.

        Copies ``spec.syncPolicy.syncOptions`` and ``spec.syncPolicy.retry`` into the operation
        and nulls ``status.operationState`` in the same merge patch (without it a
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
        if force:
            options = [o for o in sync.get("syncOptions", []) if not str(o).startswith("Replace=")]
            sync["syncOptions"] = [*options, "Replace=true"]
            sync["syncStrategy"] = {"apply": {"force": True}}
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
        self._log.info("Application %s: %ssync of %s requested by %s", self.qualified_name,
                       "forced (Replace=true, apply --force) " if force else "", revision, initiated_by)

    def wait_synced(
        self,
        *,
        revision: str,
        timeout: float,
        poll_interval: float = 2.0,
        accepts: Acceptance | None = None,
    ) -> SyncResult:
        """Poll until the Application is Synced and Healthy at ``revision``.

        Reads come every 0.1 s for the first 2 s (a small sync is over in well under a second),
        then twice as far apart each time up to ``poll_interval``, so a long one is not read more
        often than that.

        ``accepts(other)`` decides whether another revision the Application reached counts as
        ``revision`` (the branch moved during the wait: a descendant that still deploys what this
        delivery deployed); it returns why, False for "not ours", or None when it cannot tell yet
        (asked again on the next read). A definite answer is asked once per revision.

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
        verdict: Verdict | None = None
        last_reason: str | None = None
        last_error: ArgoCDError | None = None
        memo: dict[str, str | None] = {}
        pause = min(FAST_POLL_SECONDS, poll_interval)

        def accepted(other: str) -> str | None:
            if accepts is None:
                return None
            if other not in memo:
                answer = accepts(other)
                if answer is None:  # could not tell (e.g. git unreachable): asked again on the next read
                    return None
                memo[other] = answer or None
            return memo[other]

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
                verdict = assess(st, revision, accepted)
                if verdict.reason != last_reason:
                    self._log.info("Application %s: %s [%s]", self.qualified_name, verdict.reason, st.describe())
                    last_reason = verdict.reason
                if verdict.kind == "ok":
                    return SyncResult(status=st, seconds=self._clock() - start, requested_revision=revision,
                                      reached_via=verdict.reached_via)
                if verdict.kind == "failed":
                    raise SyncFailed(
                        f"Application {self.qualified_name} failed to sync {revision}: {verdict.reason} "
                        f"[{st.describe()}]",
                        status=st,
                    )
                if verdict.kind == "stale" and not st.refresh_requested:
                    try:
                        self.refresh()
                    except ArgoCDError as e:
                        if not e.transient:
                            raise
                        last_error = e
            now = self._clock()
            if now >= deadline:
                break
            self._sleep(min(pause, max(deadline - now, 0.0)))
            if self._clock() - start >= FAST_PHASE_SECONDS:
                pause = min(pause * 2, poll_interval)

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
                _request_timeout=self.request_timeout,
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
        from kubernetes.client import ApiException

        ns = namespace or self.namespace
        try:
            return fn()
        except ApiException as e:
            raise self._translate(
                e, verb=verb, resource=resource, namespace=ns, not_found_is_app=not_found_is_app, purpose=purpose
            ) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            timed_out = timeout_cause(e)
            if timed_out is not None:
                connect, read = self.request_timeout
                phase = timeout_phase(timed_out)
                raise ArgoCDError(
                    f"Application {self.qualified_name}: the Kubernetes API did not answer {verb} {resource} in "
                    f"namespace {ns} within the {connect if phase == 'connect' else read:g}s {phase} timeout"
                ) from e
            raise ArgoCDError(
                f"Application {self.qualified_name}: cannot reach the Kubernetes API to {verb} {resource} "
                f"in namespace {ns}: {type(e).__name__}: {first_line(str(e))}"
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
        detail = api_message(e)
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


def _initiator(obj: Mapping[str, Any]) -> str | None:
    by = (obj.get("operation") or {}).get("initiatedBy") or {}
    return by.get("username") or ("automated" if by.get("automated") else None)




# ---------------------------------------------------------------------------------------------
# History and per-resource status (status.history, status.resources)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One ``status.history`` entry: a sync that completed."""

    id: int | None
    revision: str
    deployed_at: datetime | None
    deploy_started_at: datetime | None = None
    initiated_by: str | None = None


@dataclass(frozen=True)
class ResourceState:
    """One ``status.resources`` entry: a managed object, its sync status and health."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str
    sync_status: str | None
    health_status: str | None
    health_message: str | None = None
    requires_pruning: bool = False

    @property
    def ref(self) -> str:
        """``Kind/namespace/name`` as AppStatus.out_of_sync_resources spells it."""
        return f"{self.kind}/{self.namespace}/{self.name}"


def history_from_object(obj: Mapping[str, Any]) -> tuple[HistoryEntry, ...]:
    """Parse ``status.history`` of an Application object (malformed entries are skipped)."""
    entries = []
    for h in (obj.get("status") or {}).get("history") or ():
        if not isinstance(h, Mapping):
            continue
        by = h.get("initiatedBy") or {}
        raw_id = h.get("id")
        revision = h.get("revision") or next(iter(h.get("revisions") or ()), "")
        entries.append(HistoryEntry(
            id=raw_id if isinstance(raw_id, int) else None,
            revision=str(revision or ""),
            deployed_at=parse_timestamp(h.get("deployedAt")),
            deploy_started_at=parse_timestamp(h.get("deployStartedAt")),
            initiated_by=(by.get("username") or ("automated" if by.get("automated") else None))
            if isinstance(by, Mapping) else None,
        ))
    return tuple(entries)


def resources_from_object(obj: Mapping[str, Any]) -> tuple[ResourceState, ...]:
    """Parse ``status.resources`` of an Application object (malformed entries are skipped)."""
    out = []
    for r in (obj.get("status") or {}).get("resources") or ():
        if not isinstance(r, Mapping):
            continue
        health = r.get("health") if isinstance(r.get("health"), Mapping) else {}
        out.append(ResourceState(
            group=str(r.get("group") or ""), version=str(r.get("version") or ""), kind=str(r.get("kind") or ""),
            namespace=str(r.get("namespace") or ""), name=str(r.get("name") or ""),
            sync_status=r.get("status"), health_status=health.get("status"),
            health_message=health.get("message") or None, requires_pruning=bool(r.get("requiresPruning")),
        ))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Kubeconfig
# ---------------------------------------------------------------------------------------------

# A kubeconfig is a few kilobytes; anything this large is not one (and is not worth parsing).
KUBECONFIG_MAX_BYTES = 4 * 1024 * 1024


def kubeconfig_paths(kubeconfig: str | None) -> list[str]:
    """The files a kubeconfig setting names: ``a:b`` lists merge (as kubectl does); None = the default."""
    text = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return [p for p in text.split(os.pathsep) if p]


def check_kubeconfig(paths: list[str], *, application: str) -> None:
    """Fails with the path at fault when the file(s) cannot be a kubeconfig with a cluster in it.

    Checked at first use (when a client is made), not at definitions load: kubeconfigs are
    written and rotated by other tools while the code location runs, and Git-only work (the
    sensor, manifest commits) must not stop because the cluster credentials are broken. The
    parser's messages quote the offending line, which may be a token: only line/column and the
    problem are reported.
    """
    clusters = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(KUBECONFIG_MAX_BYTES + 1)
        except OSError as e:
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path} cannot be read: {e.strerror or type(e).__name__}"
            ) from None
        if len(data) > KUBECONFIG_MAX_BYTES:
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path} is larger than {KUBECONFIG_MAX_BYTES} bytes; "
                "it is not a kubeconfig"
            )
        try:
            doc = yaml.safe_load(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path} is not UTF-8 text (byte {e.start})"
            ) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path} is not valid YAML{where}: {problem}"
            ) from None
        if doc is None:
            continue  # an empty file contributes nothing to a merge, as in kubectl
        if not isinstance(doc, dict):
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path} is not a kubeconfig: its document is a "
                f"{type(doc).__name__}, expected a mapping with clusters, users and contexts"
            )
        found = doc.get("clusters")
        if found is not None and not isinstance(found, list):
            raise KubeconfigError(
                f"Application {application}: kubeconfig {path}: `clusters` must be a list, not {type(found).__name__}"
            )
        for entry in found or ():
            name = entry.get("name") if isinstance(entry, dict) else None
            server = (entry.get("cluster") or {}).get("server") if isinstance(entry, dict) else None
            if not isinstance(server, str) or not server.strip():
                # The client would quietly fall back to http://localhost: say so instead.
                raise KubeconfigError(
                    f"Application {application}: kubeconfig {path}: cluster {name or '(unnamed)'!s} has no "
                    "`cluster.server` URL"
                )
            clusters += 1
    if clusters == 0:
        listed = os.pathsep.join(paths)
        raise KubeconfigError(
            f"Application {application}: kubeconfig {listed} defines no clusters (the `clusters` list is missing "
            "or empty), so there is no API server to talk to"
        )
