"""Argo CD brings the cluster to the branch head; we wait until it is Synced and Healthy there.

The branch only moves forward under a delivery: a rerun of an old commit syncs the head (never
an older revision), and a push during the wait (ours or a human's) is success as long as the
revision Argo CD reached still deploys this delivery's images, or newer ones.
"""

from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.delivery.sync import plan_sync
from coelho_pipeline.domain import ManifestCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.target import DeliveryTargetResource


@dg.asset(
    partitions_def=source_commits,
    group_name="delivery",
    kinds={"kubernetes"},
    output_required=False,
    retry_policy=RETRY_POLICY,
)
def argocd_sync(
    context: dg.AssetExecutionContext,
    manifest_commit: ManifestCommit,
    argocd: ArgoCDResource,
    git: GitResource,
    target: DeliveryTargetResource,
) -> Iterator[dg.MaterializeResult]:
    """Syncs the Application to the branch head (which holds this delivery) and waits for Synced+Healthy.

    With no cluster configured (KUBECONFIG / COELHO_KUBE_CONTEXT unset) the run says so and ends
    without materializing this asset: a missing deployment is visible, never a silent pass.
    """
    try:
        client = argocd.client()
    except ArgoCDError as e:
        raise failure(e) from e
    if client is None:
        context.log.warning(
            "No cluster configured (KUBECONFIG and COELHO_KUBE_CONTEXT are unset): Argo CD was not asked to "
            f"sync {manifest_commit.sha}; argocd_sync is left unmaterialized for this commit."
        )
        return
    application = f"{argocd.namespace}/{argocd.app_name}"
    with client:
        try:
            plan = plan_sync(git.remote(), target, manifest_commit, application=application)
            context.log.info(plan.story)
            client.refresh(hard=False)
            client.sync(revision=plan.revision, info={"dagster-run": context.run.run_id,
                                                      "source-commit": manifest_commit.source_sha})
            context.log.info(f"sync of {application} to {plan.revision} requested; waiting")
            result = client.wait_synced(revision=plan.revision, timeout=argocd.sync_timeout_seconds,
                                        accepts=plan.accepts)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    status = result.status
    if result.reached_via:
        context.log.info(f"{application} reached {result.reached_via}, which still deploys this delivery")
    yield dg.MaterializeResult(metadata={
        "application": application,
        "manifest_commit": manifest_commit.sha,
        "requested_revision": plan.revision,
        "revision": status.revision or "",
        "reached_via": result.reached_via or "the requested revision",
        "synced": plan.story,
        "sync": status.sync_status or "",
        "health": status.health_status or "",
        "operation": status.operation_phase or "",
        "seconds_to_converge": round(result.seconds, 2),
        "images": ", ".join(status.images),
    })
