"""Each target's jobs: the delivery (one run per source commit), drift check, rollback, insight."""

from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from coelho_pipeline.targets import Target

# Runs carrying this tag are limited to one at a time per value in dagster.yaml: a single writer per
# project (its branch), while two projects write side by side.
MANIFEST_WRITER_TAG = "coelho/manifest-writer"
# Every run of a target carries it, to find that target's runs (value: project/environment).
TARGET_TAG = "coelho/target"


def writer_tags(target: Target) -> dict[str, str]:
    return {MANIFEST_WRITER_TAG: target.writer_tag_value}


def delivery_tags(target: Target) -> dict[str, str]:
    """The tags of ``target``'s deliveries and rollbacks (and of no other target's)."""
    return {**writer_tags(target), TARGET_TAG: target.label}


@dataclass(frozen=True)
class TargetJobs:
    deliver_commit: UnresolvedAssetJobDefinition
    drift_check: UnresolvedAssetJobDefinition
    rollback: UnresolvedAssetJobDefinition
    delivery_insight: UnresolvedAssetJobDefinition

    def all(self) -> list[UnresolvedAssetJobDefinition]:
        return [self.deliver_commit, self.drift_check, self.rollback, self.delivery_insight]


def build_jobs(target: Target) -> TargetJobs:
    label = {TARGET_TAG: target.label}
    return TargetJobs(
        deliver_commit=dg.define_asset_job(
            target.delivery_job,
            selection=dg.AssetSelection.groups(target.name("delivery")),
            tags=delivery_tags(target),
            description=(f"Promote a delivery verified in {target.promote_from}: write its images into "
                         f"{target.environment.values_path}, commit it, and sync Argo CD to that commit."
                         if target.promote_from else
                         "Build changed images, write values.yaml, commit it, and sync Argo CD to that commit."),
        ),
        drift_check=dg.define_asset_job(
            target.name("drift_check"),
            selection=dg.AssetSelection.assets(target.key("live_state")),
            tags=label,
            description="Compare the tags in values.yaml at the branch head with what the Application runs.",
        ),
        rollback=dg.define_asset_job(
            target.name("rollback"),
            selection=dg.AssetSelection.assets(target.key("rollback_commit")),
            tags=delivery_tags(target),
            description="Roll back to this partition's delivery (a new commit), sync Argo CD to it, and hold.",
        ),
        delivery_insight=dg.define_asset_job(
            target.name("delivery_insight"),
            selection=dg.AssetSelection.assets(target.key("delivery_metrics")),
            tags=label,
            description="Compute the DORA keys and the rework rate from the instance's delivery records, with plots.",
        ),
    )
