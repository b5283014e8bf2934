"""What an Application's status says, parsed from one read of the ``argoproj.io/v1alpha1`` object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"

# Conditions that mean Argo CD cannot even render or compare the Application.
ERROR_CONDITIONS = frozenset({"ComparisonError", "InvalidSpecError"})
# Operation phases. "Completed" = Failed, Error, Succeeded.
IN_PROGRESS_PHASES = frozenset({"Running", "Terminating"})
FAILED_PHASES = frozenset({"Failed", "Error"})



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
        """Health predates the last operation's end, so it says nothing about it.

        ``reconciledAt < finishedAt`` is stale. Equal timestamps with no fractional part are
        treated as stale too: Kubernetes writes whole seconds, so a comparison made 0.3 s
        *before* the sync finished shows the same second as ``finishedAt``. Calling that stale
        costs one extra refresh; calling it fresh would read the health of the state before the sync as the result.
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
    """Outcome of a successful wait.

    ``reached_via`` is None when the Application reached the requested revision itself, and says
    why another revision was accepted otherwise (e.g. a descendant pushed during the wait).
    """

    status: AppStatus
    seconds: float
    requested_revision: str = ""
    reached_via: str | None = None


def _first(values: object) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None


def _fmt(ts: datetime | None) -> str:
    return ts.isoformat().replace("+00:00", "Z") if ts else "-"
