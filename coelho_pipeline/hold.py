"""The delivery hold: after a rollback, automation must not redeploy what was rolled back.

The hold lives in the Dagster instance as the latest materialization of the ``delivery_hold``
asset, so it survives restarts of the webserver and daemon, and the UI shows it (held or released,
since when, by which rollback, why). The push sensor and ``deliver_commit`` read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from coelho_pipeline.targets import Target

HOLD_ASSET = "delivery_hold"


def delivery_hold(target: Target) -> dg.AssetSpec:
    """The hold of one target: a rollback in one environment holds that environment only."""
    return dg.AssetSpec(
        target.key(HOLD_ASSET),
        group_name=target.name("ops"),
        kinds={"git"},
        description=f"Held after a rollback: new commits are recorded but not delivered until "
                    f"{target.name('release_hold')} runs. Its latest materialization is the current state.",
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


def current_hold(instance: dg.DagsterInstance, target: Target) -> Hold | None:
    """The latest hold event of ``target``, or None when no hold was ever set."""
    records = instance.fetch_materializations(target.key(HOLD_ASSET), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    record = records[0]
    md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return Hold(held=bool(md.get("held")), since=str(md.get("since", "")), by=str(md.get("by", "")),
                reason=str(md.get("reason", "")), rolled_back_to=str(md.get("rolled_back_to", "")),
                storage_id=record.storage_id)


def refuse_if_held(instance: dg.DagsterInstance, target: Target, sha: str) -> None:
    """A delivery step refuses while held: whatever started it (the sensor, a manual run, a step
    materialized alone from the UI), automation must not redeploy what a rollback took back."""
    hold = current_hold(instance, target)
    if hold is not None and hold.held:
        raise dg.Failure(f"delivery of {sha} refused: deliveries are {hold.describe()}. Run "
                         f"{target.name('release_hold')} to deliver again.", allow_retries=False)


def hold_event(target: Target, *, held: bool, by: str, reason: str,
               rolled_back_to: str = "") -> dg.AssetMaterialization:
    """The materialization that sets (``held``) or releases the hold."""
    hold = Hold(held, datetime.now(timezone.utc).isoformat(timespec="seconds"), by, reason, rolled_back_to)
    return dg.AssetMaterialization(asset_key=target.key(HOLD_ASSET), metadata={
        "held": held,
        "since": hold.since,
        "by": by,
        "reason": reason,
        "rolled_back_to": rolled_back_to,
        "report": dg.MetadataValue.md(f"Deliveries {hold.describe()}"),
    })
