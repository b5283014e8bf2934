"""The verdict "Synced + Healthy at revision X" for one AppStatus.

Pure: no I/O. A revision other than the requested one counts as reached only when the caller's
``accepts`` says so (e.g. a descendant commit that still carries the delivery's image tags).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from coelho_pipeline.argocd.status import FAILED_PHASES, IN_PROGRESS_PHASES, AppStatus

# Health values that only need more time. Unknown is transient during a reconcile.
WAITING_HEALTH = frozenset({"", "Progressing", "Suspended", "Unknown"})
# Health values that are a real problem once the app is at the target revision.
UNHEALTHY = frozenset({"Degraded", "Missing"})

# revision -> why it is as good as the requested one; False/"" when it is not; None when that cannot
# be told yet (the wait asks again).
Acceptance = Callable[[str], "str | bool | None"]


@dataclass(frozen=True)
class Verdict:
    kind: str  # ok | wait | stale | failed | unhealthy
    reason: str
    reached_via: str | None = None  # set on "ok" at an accepted (not the requested) revision




def assess(status: AppStatus, revision: str, accepts: Acceptance | None = None) -> Verdict:
    """One AppStatus -> verdict for "Synced + Healthy at ``revision``".

    Order matters: an operation result is checked before the stale-health guard because the
    phase is not stale information, and the guard runs before revision/sync/health because
    those are exactly what may be stale.
    """

    def accepted(other: str | None) -> str | None:
        if not other:
            return None
        if same_revision(other, revision):
            return ""
        return (accepts(other) or None) if accepts is not None else None

    errors = status.error_conditions
    if errors:
        return Verdict("failed", "; ".join(f"{t}: {m}" for t, m in errors))
    if status.operation_phase in IN_PROGRESS_PHASES:
        return Verdict("wait", f"operation {status.operation_phase}")
    if status.operation_requested:
        return Verdict("wait", "operation requested, not started yet")
    if status.operation_phase in FAILED_PHASES:
        op_rev = status.operation_revision
        if op_rev is None or same_revision(op_rev, revision):
            return Verdict(
                "failed",
                f"sync operation {status.operation_phase} at {op_rev or 'an unknown revision'}: "
                f"{status.operation_message or 'no message'}",
            )
        # A failed operation for another revision: a later one may still deliver ours.
        return Verdict("wait", f"last operation {status.operation_phase} at {op_rev}")
    if status.health_is_stale:
        return Verdict("stale", "health predates the end of the last operation")
    via = accepted(status.revision)
    if via is None:
        moved = " (not accepted in place of it)" if status.revision and accepts is not None else ""
        return Verdict("wait", f"at revision {status.revision or '-'}{moved}")
    if status.operation_phase == "Succeeded" and status.operation_revision and accepted(
        status.operation_revision
    ) is None:
        return Verdict("wait", f"last sync was at {status.operation_revision}")
    if status.sync_status != "Synced":
        return Verdict("wait", f"sync status {status.sync_status or '-'}")
    health = status.health_status or ""
    if health == "Healthy":
        return Verdict("ok", "Synced and Healthy" + (f" at {via}" if via else ""), reached_via=via or None)
    if health in UNHEALTHY:
        return Verdict("unhealthy", f"health {health}" + (f": {status.health_message}" if status.health_message else ""))
    return Verdict("wait", f"health {health or '-'}")


def same_revision(a: str, b: str) -> bool:
    """Full SHAs compare exactly; a short SHA on either side matches as a prefix (>= 7 chars)."""
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    short, full = sorted((a, b), key=len)
    return len(short) >= 7 and re.fullmatch(r"[0-9a-f]+", short) is not None and full.startswith(short)


