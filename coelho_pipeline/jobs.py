"""The delivery job (one run per source commit) and the drift-check job."""

import dagster as dg

# Runs carrying this tag are limited to one at a time in dagster.yaml: a single writer per branch.
MANIFEST_WRITER_TAG = "coelho/manifest-writer"
WRITER_TAGS = {MANIFEST_WRITER_TAG: "main"}

deliver_commit = dg.define_asset_job(
    "deliver_commit",
    selection=dg.AssetSelection.groups("delivery"),
    tags=WRITER_TAGS,
    description="Build changed images, write values.yaml, commit it, and sync Argo CD to that commit.",
)

drift_check = dg.define_asset_job(
    "drift_check",
    selection=dg.AssetSelection.assets("live_state"),
    description="Compare the tags in values.yaml at the branch head with what the Application runs.",
)

rollback = dg.define_asset_job(
    "rollback",
    selection=dg.AssetSelection.assets("rollback_commit"),
    tags=WRITER_TAGS,
    description="Roll back to this partition's delivery (a new commit), sync Argo CD to it, and hold.",
)

delivery_insight = dg.define_asset_job(
    "delivery_insight",
    selection=dg.AssetSelection.assets("delivery_metrics"),
    description="Compute the DORA keys and the rework rate from the instance's delivery records, with plots.",
)
