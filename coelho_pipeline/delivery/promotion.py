"""Promotion between environments: which upstream deliveries may be taken over downstream.

A delivery is promotable when the upstream environment brought it to Synced+Healthy and its rollout
verification passed; the downstream environment then writes the same image references (read from
upstream's values file at upstream's manifest commit) into its own values file. Nothing is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from coelho_pipeline.targets import Target

# How many of upstream's latest rollbacks are looked through for one that took a delivery back.
ROLLBACK_LOOKBACK = 50


@dataclass(frozen=True)
class VerifiedDelivery:
    """What an upstream environment recorded for a delivery it brought to Synced+Healthy and verified."""

    manifest_commit: str
    verification: str
    run_id: str


def upstream_verified(instance: dg.DagsterInstance, upstream: Target, sha: str) -> VerifiedDelivery:
    """The upstream delivery of ``sha`` if it may be promoted; else a terminal Failure saying why."""
    why = promotion_refusal(instance, upstream, sha)
    if isinstance(why, str):
        raise dg.Failure(f"{sha} is not promoted from {upstream.label}: {why}", allow_retries=False)
    return why


def promotion_refusal(instance: dg.DagsterInstance, upstream: Target, sha: str) -> VerifiedDelivery | str:
    """The verified upstream delivery of ``sha``, or why there is none (a message)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=upstream.key("argocd_sync"), asset_partitions=[sha]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return f"its delivery to {upstream.environment.name} never reached the cluster (no argocd_sync record)"
    metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    state = (metadata.get("sync"), metadata.get("health"))
    if state != ("Synced", "Healthy"):
        return f"its delivery to {upstream.environment.name} ended {state[0]}/{state[1]}, not Synced/Healthy"
    if metadata.get("verification") != "passed":
        return (f"its rollout verification in {upstream.environment.name} is "
                f"{metadata.get('verification', 'not recorded')}, not passed")
    commit = str(metadata.get("manifest_commit") or "")
    if not commit:
        return f"its delivery to {upstream.environment.name} recorded no manifest commit"
    # Verified once, then taken back: what upstream rolled back from is not promoted.
    for rollback in instance.fetch_materializations(upstream.key("rollback_commit"), limit=ROLLBACK_LOOKBACK).records:
        if rollback.timestamp < records[0].timestamp or rollback.asset_materialization is None:
            continue
        rolled_back_from = rollback.asset_materialization.metadata.get("rolled_back_from")
        if rolled_back_from is not None and rolled_back_from.value == sha:
            return f"{upstream.environment.name} rolled it back (to {rollback.partition_key}) after it was verified"
    return VerifiedDelivery(commit, "passed", records[0].run_id)
