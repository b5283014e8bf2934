"""The delivery hold: after a rollback, automation must not redeploy what was rolled back.

The hold lives in the Dagster instance as the latest materialization of the ``delivery_hold``
asset, so it survives restarts of the webserver and daemon, and the UI shows it (held or released,
since when, by which rollback, why). The push sensor and ``deliver_commit`` read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

HOLD_KEY = dg.AssetKey("delivery_hold")

delivery_hold = dg.AssetSpec(
    HOLD_KEY,
    group_name="ops",
    kinds={"git"},
    description="Held after a rollback: new commits are recorded but not delivered until release_hold runs. "
                "Its latest materialization is the current state.",
)


@dataclass(frozen=True)
class Hold:
    held: bool
    since: str  # ISO time of the event
    by: str  # what set or released it, e.g. "rollback to <sha>"
    reason: str
    rolled_back_to: str = ""
    storage_id: int = 0  # the event's id in the instance: identifies one release for run keys

    def describe(self) -> str:
        if self.held:
            return f"held since {self.since} by {self.by}: {self.reason}"
        return f"released at {self.since} by {self.by}: {self.reason}"


def current_hold(instance: dg.DagsterInstance) -> Hold | None:
    """The latest hold event, or None when no hold was ever set."""
    records = instance.fetch_materializations(HOLD_KEY, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    record = records[0]
    md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return Hold(held=bool(md.get("held")), since=str(md.get("since", "")), by=str(md.get("by", "")),
                reason=str(md.get("reason", "")), rolled_back_to=str(md.get("rolled_back_to", "")),
                storage_id=record.storage_id)


def refuse_if_held(instance: dg.DagsterInstance, sha: str) -> None:
    """A delivery step refuses while held: whatever started it (the sensor, a manual run, a step
    materialized alone from the UI), automation must not redeploy what a rollback took back."""
    hold = current_hold(instance)
    if hold is not None and hold.held:
        raise dg.Failure(f"delivery of {sha} refused: deliveries are {hold.describe()}. Run release_hold to "
                         "deliver again.", allow_retries=False)


def hold_event(*, held: bool, by: str, reason: str, rolled_back_to: str = "") -> dg.AssetMaterialization:
    """The materialization that sets (``held``) or releases the hold."""
    hold = Hold(held, datetime.now(timezone.utc).isoformat(timespec="seconds"), by, reason, rolled_back_to)
    return dg.AssetMaterialization(asset_key=HOLD_KEY, metadata={
        "held": held,
        "since": hold.since,
        "by": by,
        "reason": reason,
        "rolled_back_to": rolled_back_to,
        "report": dg.MetadataValue.md(f"Deliveries {hold.describe()}"),
    })
