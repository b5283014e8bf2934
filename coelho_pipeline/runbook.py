"""The runbook's read and sync commands (``argocd app get`` / ``app diff`` / ``app sync [--force]``),
as functions over the Argo CD client and the Git remote that return reports with markdown.

* :func:`read_status` — sync, health, revision, the last operation and its message, the history
  and every managed resource's status, from one read of the Application.
* :func:`diff_application` — the chart rendered with Helm's engine at the branch head (the chart
  archive from Git at that commit, the Application's Helm parameters on top, as the delivery's
  render check does) against the live objects read through the Kubernetes API. Only the keys
  present in the rendered object are compared, and the fields the server sets are dropped, so
  defaults, status and bookkeeping never show as differences.
* :func:`sync_to_head` — refresh, sync the branch head, wait for Synced+Healthy; ``force`` is a
  hard refresh and a sync with ``Replace=true`` and ``syncStrategy.apply.force``.

The Dagster jobs (``coelho_pipeline.runbook_jobs``) and the ``coelho`` console script
(``coelho_pipeline.cli``) are thin layers over these.
"""

from __future__ import annotations

import copy
import difflib
import io
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from coelho_pipeline.argocd import AppStatus, ArgoCDClient, SyncResult
from coelho_pipeline.argocd.client import (
    HistoryEntry,
    ResourceState,
    history_from_object,
    resources_from_object,
)
from coelho_pipeline.chart import ChartRenderError, argocd_helm_overrides, render_chart
from coelho_pipeline.delivery.verify import extract_chart
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.resources.target import DeliveryTargetResource

__all__ = [
    "IN_SYNC", "DIFFERS", "MISSING_LIVE", "EXTRA", "NO_CLUSTER", "TRACKING_LABEL",
    "DiffReport", "ResourceDiff", "RunbookError", "StatusReport", "SyncReport",
    "compare_object", "desired_objects", "diff_application", "read_status", "status_markdown", "sync_to_head",
]

IN_SYNC, DIFFERS, MISSING_LIVE, EXTRA = "in sync", "differs", "missing live", "extra"

NO_CLUSTER = ("No cluster configured (KUBECONFIG and COELHO_KUBE_CONTEXT are unset, and not running in a pod): "
              "there is no Application to read or sync.")

# Argo CD's default resource tracking label (application.instanceLabelKey): value = Application name.
TRACKING_LABEL = "app.kubernetes.io/instance"

# Set by the API server, never by a chart: dropped from both sides before comparing.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)

# How long a refresh may take before the sync is requested anyway would hide a broken controller.
REFRESH_TIMEOUT_SECONDS = 60.0


class RunbookError(PipelineError):
    """A runbook command cannot run (no cluster, nothing to render); the message says why."""


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """One read of the Application: ``argocd app get``."""

    application: str
    status: AppStatus
    history: tuple[HistoryEntry, ...]
    resources: tuple[ResourceState, ...]

    @property
    def markdown(self) -> str:
        return status_markdown(self)


def read_status(client: ArgoCDClient) -> StatusReport:
    """The Application's status, history and managed resources, from one read (one consistent view)."""
    obj = client.get()
    return StatusReport(client.qualified_name, AppStatus.from_object(obj), history_from_object(obj),
                        resources_from_object(obj))


def status_markdown(report: StatusReport, *, title: str | None = None) -> str:
    st = report.status
    operation = st.operation_phase or "none"
    if st.operation_message:
        operation += f": {st.operation_message}"
    rows = [
        ("sync", st.sync_status or "Unknown"),
        ("health", (st.health_status or "Unknown") + (f" ({st.health_message})" if st.health_message else "")),
        ("revision", st.revision or "-"),
        ("last operation", operation),
        ("operation revision", st.operation_revision or "-"),
        ("operation by", st.operation_initiated_by or "-"),
        ("operation started", _ts(st.operation_started_at)),
        ("operation finished", _ts(st.operation_finished_at)),
        ("reconciled", _ts(st.reconciled_at)),
        ("images", ", ".join(st.images) or "-"),
    ]
    if st.operation_requested:
        rows.append(("operation requested", "yes (not completed)"))
    for kind, message in st.conditions:
        rows.append((f"condition {kind}", message))
    lines = [f"## {title or f'Application {report.application}'}", "", "| field | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    lines += ["", f"### History ({len(report.history)})", ""]
    if report.history:
        lines += ["| id | revision | deployed at | by |", "|---|---|---|---|"]
        for h in reversed(report.history):  # newest first, as `argocd app history` reads best
            lines.append(f"| {h.id if h.id is not None else '-'} | {_cell(h.revision or '-')} | "
                         f"{_ts(h.deployed_at)} | {_cell(h.initiated_by or '-')} |")
    else:
        lines.append("No sync recorded yet.")
    lines += ["", f"### Resources ({len(report.resources)})", ""]
    if report.resources:
        lines += ["| kind | namespace | name | sync | health |", "|---|---|---|---|---|"]
        for r in report.resources:
            kind = f"{r.group}/{r.kind}" if r.group else r.kind
            health = (r.health_status or "-") + (f" ({r.health_message})" if r.health_message else "")
            sync = (r.sync_status or "-") + (" (requires pruning)" if r.requires_pruning else "")
            lines.append(f"| {_cell(kind)} | {_cell(r.namespace or '-')} | {_cell(r.name)} | {_cell(sync)} | "
                         f"{_cell(health)} |")
    else:
        lines.append("Argo CD lists no managed resources (not compared yet, or nothing rendered).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceDiff:
    api_version: str
    kind: str
    namespace: str
    name: str
    state: str  # IN_SYNC / DIFFERS / MISSING_LIVE / EXTRA
    diff: str = ""  # unified diff of YAML (live -> git) when DIFFERS
    note: str = ""

    @property
    def ref(self) -> str:
        group = self.api_version.rpartition("/")[0]
        kind = f"{group}/{self.kind}" if group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


@dataclass(frozen=True)
class DiffReport:
    """``argocd app diff``: the branch head rendered against the live objects, per resource."""

    application: str
    revision: str
    namespace: str
    items: tuple[ResourceDiff, ...]

    def count(self, state: str) -> int:
        return sum(1 for i in self.items if i.state == state)

    @property
    def differences(self) -> int:
        """Resources not in sync (differ, missing live, extra): 0 means Git and the cluster agree."""
        return sum(1 for i in self.items if i.state != IN_SYNC)

    @property
    def markdown(self) -> str:
        summary = ", ".join(f"{self.count(s)} {s}" for s in (IN_SYNC, DIFFERS, MISSING_LIVE, EXTRA))
        lines = [f"## Diff of Application {self.application}: branch head {self.revision} against live",
                 "", f"{summary} (namespace {self.namespace}).", "",
                 "| resource | state |", "|---|---|"]
        for item in self.items:
            lines.append(f"| {_cell(item.ref)} | {item.state}" + (f" ({_cell(item.note)})" if item.note else "")
                         + " |")
        for item in self.items:
            if item.state == DIFFERS:
                lines += ["", f"### {item.ref}", "", "```diff", item.diff.rstrip("\n"), "```"]
        return "\n".join(lines) + "\n"


def desired_objects(remote: GitRemote, revision: str, target: DeliveryTargetResource, *,
                    application: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart at ``revision`` rendered with Helm's engine as the Application renders it.

    The Helm parameters are the live Application's (``application``, what Argo CD uses) or, without
    one, those of the Application manifest in Git at ``revision``.

    Raises:
        RunbookError: the values file is missing, the chart does not render or leaves its directory.
    """
    values_text = remote.read_file(revision, target.values_path)
    if values_text is None:
        raise RunbookError(f"{target.values_path} does not exist at {revision}; nothing to render")
    try:
        if application is not None:
            overrides = argocd_helm_overrides(yaml.safe_dump(dict(application)))
        else:
            manifest = remote.read_file(revision, target.application_path)
            overrides = argocd_helm_overrides(manifest) if manifest else {}
    except ValueError as e:
        raise RunbookError(f"{target.application_path}: {e}") from e
    with tempfile.TemporaryDirectory(prefix="coelho-diff-") as tmp:
        chart_dir = Path(tmp) / "chart"
        with tarfile.open(fileobj=io.BytesIO(remote.archive(revision, target.chart_path))) as tar:
            problem = extract_chart(tar, chart_dir, target.chart_path)
        if problem:
            raise RunbookError(problem)
        try:
            return render_chart(chart_dir, values_text, release=target.release_name,
                                namespace=target.deploy_namespace, overrides=overrides)
        except ChartRenderError as e:
            raise RunbookError(f"the chart at {target.chart_path} does not render at {revision}: "
                               f"{e.helm_message}") from e


def diff_application(client: ArgoCDClient, remote: GitRemote, target: DeliveryTargetResource) -> DiffReport:
    """Render the branch head and compare it with what the Kubernetes API holds, per resource."""
    head = remote.fetch()
    app = client.get()
    spec = app.get("spec") or {}
    namespace = (spec.get("destination") or {}).get("namespace") or target.deploy_namespace
    desired = desired_objects(remote, head, target, application=app)
    kinds = _Discovery(client)
    items: list[ResourceDiff] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in desired:
        api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        served = kinds.find(api_version, kind)
        ns = (str(meta.get("namespace") or namespace)) if served is None or served[1] else ""
        seen.add((kind, ns, name))
        if served is None:
            items.append(ResourceDiff(api_version, kind, ns, name, MISSING_LIVE,
                                      note=f"the API serves no {kind} in {api_version}"))
            continue
        live = client.read_path(_object_path(api_version, served[0], ns, name),
                                resource=f"{served[0]}.{api_version}", namespace=ns or None)
        if live is None:
            items.append(ResourceDiff(api_version, kind, ns, name, MISSING_LIVE))
            continue
        diff = compare_object(obj if not ns else _with_namespace(obj, ns), live,
                              fromfile=f"live {kind} {ns}/{name}".replace(" /", " "),
                              tofile=f"git {kind} {ns}/{name} at {head[:12]}".replace(" /", " "))
        items.append(ResourceDiff(api_version, kind, ns, name, DIFFERS if diff else IN_SYNC, diff))
    items.extend(_extras(client, kinds, desired, seen, namespace, app))
    return DiffReport(client.qualified_name, head, namespace, tuple(items))


def compare_object(desired: Mapping[str, Any], live: Mapping[str, Any], *, fromfile: str = "live",
                   tofile: str = "git") -> str:
    """A unified YAML diff (live -> desired) over the keys ``desired`` sets; "" when they agree.

    Server-set fields are dropped from both, keys only the live object has are ignored (defaults,
    status, labels added by controllers), an empty value the server omits counts as equal, and
    quantities compare by value (``500m`` = ``0.5``).
    """
    want = _strip_server_fields(_drop_nulls(copy.deepcopy(dict(desired))))
    have = _project(want, _strip_server_fields(copy.deepcopy(dict(live))))
    if have == want:
        return ""
    a = yaml.safe_dump(have, sort_keys=True, default_flow_style=False).splitlines(keepends=True)
    b = yaml.safe_dump(want, sort_keys=True, default_flow_style=False).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=fromfile, tofile=tofile))


class _Discovery:
    """kind -> (plural, namespaced) per groupVersion, asked once per groupVersion (every call bounded)."""

    def __init__(self, client: ArgoCDClient) -> None:
        self._client = client
        self._lists: dict[str, dict[str, tuple[str, bool]]] = {}

    def find(self, api_version: str, kind: str) -> tuple[str, bool] | None:
        if api_version not in self._lists:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            listing = self._client.read_path(path, resource=f"discovery {api_version}") or {}
            found: dict[str, tuple[str, bool]] = {}
            for r in listing.get("resources") or ():
                if isinstance(r, Mapping) and "/" not in str(r.get("name", "")) and r.get("kind"):
                    found.setdefault(str(r["kind"]), (str(r["name"]), r.get("namespaced") is not False))
            self._lists[api_version] = found
        return self._lists[api_version].get(kind)


def _extras(client: ArgoCDClient, kinds: _Discovery, desired: Sequence[Mapping[str, Any]],
            seen: set[tuple[str, str, str]], namespace: str, app: Mapping[str, Any]) -> list[ResourceDiff]:
    """Live objects Git does not render: the ones Argo CD lists as managed, and the ones carrying the
    Application's tracking label, of the kinds the chart renders, in the destination namespace."""
    app_name = str((app.get("metadata") or {}).get("name") or client.app_name)
    extras: dict[tuple[str, str, str], ResourceDiff] = {}
    for r in resources_from_object(app):
        key = (r.kind, r.namespace, r.name)
        if key not in seen:
            api_version = f"{r.group}/{r.version}" if r.group else r.version
            extras[key] = ResourceDiff(api_version, r.kind, r.namespace, r.name, EXTRA,
                                       note="requires pruning" if r.requires_pruning else "listed by Argo CD")
    for api_version, kind in sorted({(str(o.get("apiVersion")), str(o.get("kind"))) for o in desired}):
        served = kinds.find(api_version, kind)
        if served is None:
            continue
        plural, namespaced = served
        path = _collection_path(api_version, plural, namespace if namespaced else "")
        listing = client.read_path(path, resource=f"{plural}.{api_version}", namespace=namespace,
                                   query={"labelSelector": f"{TRACKING_LABEL}={app_name}"}) or {}
        for item in listing.get("items") or ():
            meta = (item or {}).get("metadata") or {}
            # Filtered here too: a selector the server did not apply must not turn into findings.
            if (meta.get("labels") or {}).get(TRACKING_LABEL) != app_name:
                continue
            key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if key not in seen and key not in extras:
                extras[key] = ResourceDiff(api_version, kind, key[1], key[2], EXTRA,
                                           note=f"labelled {TRACKING_LABEL}={app_name}, not in Git")
    return [extras[k] for k in sorted(extras)]


def _object_path(api_version: str, plural: str, namespace: str, name: str) -> str:
    return f"{_collection_path(api_version, plural, namespace)}/{quote(name, safe='')}"


def _collection_path(api_version: str, plural: str, namespace: str) -> str:
    prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    return f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}" if namespace else f"{prefix}/{plural}"


def _with_namespace(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    # Argo CD applies namespaced objects without a namespace into the destination namespace.
    out = copy.deepcopy(dict(obj))
    out.setdefault("metadata", {}).setdefault("namespace", namespace)
    return out


def _strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_METADATA:
            meta.pop(key, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            for key in SERVER_ANNOTATIONS:
                annotations.pop(key, None)
            if not annotations:
                meta.pop("annotations")
    return obj


def _drop_nulls(value: Any) -> Any:
    # A null in a manifest means "not set": the server stores nothing for it.
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _project(want: Any, have: Any) -> Any:
    """``have`` cut down to the shape of ``want``: what the live object says about the keys Git sets."""
    if isinstance(want, dict) and isinstance(have, dict):
        out = {}
        for key, value in want.items():
            if key in have:
                out[key] = _project(value, have[key])
            elif value in ({}, [], ""):
                out[key] = value  # the server omits empty values
        return out
    if isinstance(want, list) and isinstance(have, list):
        return [_project(w, h) for w, h in zip(want, have)] + have[len(want):]
    if want != have and _same_quantity(want, have):
        return want
    return have


def _same_quantity(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (str, int, float)) \
            or not isinstance(b, (str, int, float)):
        return False
    try:
        from kubernetes.utils import parse_quantity  # only a diff needs it; the package is slow to import

        return Decimal(parse_quantity(a)) == Decimal(parse_quantity(b))
    except (ValueError, TypeError, InvalidOperation):
        return False


# ---------------------------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """A sync of the branch head that reached Synced+Healthy."""

    application: str
    revision: str
    force: bool
    result: SyncResult
    after: StatusReport
    operation_state: Mapping[str, Any] = field(default_factory=dict)  # status.operationState after it

    @property
    def markdown(self) -> str:
        how = "forced (hard refresh, Replace=true, apply --force)" if self.force else "refresh + sync"
        head = (f"Synced {self.application} to the branch head {self.revision} ({how}) in "
                f"{self.result.seconds:.1f}s: {self.result.status.sync_status}, {self.result.status.health_status}.")
        body = status_markdown(self.after, title=f"Application {self.application} after the sync")
        results = (self.operation_state.get("syncResult") or {}).get("resources") or ()
        lines = [head, "", body]
        if results:
            lines += ["### Sync result", "", "| kind | namespace | name | status | message |", "|---|---|---|---|---|"]
            for r in results:
                lines.append(f"| {_cell(r.get('kind', ''))} | {_cell(r.get('namespace') or '-')} | "
                             f"{_cell(r.get('name', ''))} | {_cell(r.get('status') or '-')} | "
                             f"{_cell(r.get('message') or '-')} |")
        return "\n".join(lines).rstrip("\n") + "\n"


def sync_to_head(client: ArgoCDClient, remote: GitRemote, *, force: bool, timeout: float,
                 info: Mapping[str, str] = {},  # noqa: B006 - read only
                 refresh_timeout: float = REFRESH_TIMEOUT_SECONDS) -> SyncReport:
    """Refresh (hard with ``force``), sync the branch head, wait until Synced+Healthy there.

    Raises:
        GitError: the branch head cannot be fetched.
        SyncFailed / SyncTimeout / ArgoCDError: from the client (the message carries Argo CD's).
    """
    head = remote.fetch()
    # A hard refresh makes Argo CD regenerate the manifests (no cached render) before the sync.
    client.refresh_and_read(hard=force, timeout=refresh_timeout)
    client.sync(revision=head, info=info, force=force, timeout=timeout)
    result = client.wait_synced(revision=head, timeout=timeout)
    obj = client.get()
    after = StatusReport(client.qualified_name, AppStatus.from_object(obj), history_from_object(obj),
                         resources_from_object(obj))
    op_state = (obj.get("status") or {}).get("operationState") or {}
    return SyncReport(client.qualified_name, head, force, result, after, dict(op_state))


# ---------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _ts(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else "-"
