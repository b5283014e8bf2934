"""Argo CD brings the cluster to the manifest commit; we wait until it is Synced and Healthy there."""

from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.domain import ManifestCommit
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource


@dg.asset(partitions_def=source_commits, group_name="delivery", kinds={"kubernetes"}, output_required=False)
def argocd_sync(
    context: dg.AssetExecutionContext,
    manifest_commit: ManifestCommit,
    argocd: ArgoCDResource,
) -> Iterator[dg.MaterializeResult]:
    """Refreshes the Application, requests a sync of the manifest commit and waits for Synced+Healthy at it.

    With no cluster configured (KUBECONFIG / COELHO_KUBE_CONTEXT unset) the run says so and ends
    without materializing this asset: a missing deployment is visible, never a silent pass.
    """
    client = argocd.client()
    if client is None:
        context.log.warning(
            "No cluster configured (KUBECONFIG and COELHO_KUBE_CONTEXT are unset): Argo CD was not asked to "
            f"sync {manifest_commit.sha}; argocd_sync is left unmaterialized for this commit."
        )
        return
    revision = manifest_commit.sha
    try:
        client.refresh(hard=False)
        client.sync(revision=revision, info={"dagster-run": context.run.run_id, "source-commit": manifest_commit.source_sha})
        context.log.info(f"sync of {argocd.namespace}/{argocd.app_name} to {revision} requested; waiting")
        result = client.wait_synced(revision=revision, timeout=argocd.sync_timeout_seconds)
    except ArgoCDError as e:
        raise dg.Failure(str(e)) from None
    status = result.status
    yield dg.MaterializeResult(metadata={
        "application": f"{argocd.namespace}/{argocd.app_name}",
        "revision": status.revision or "",
        "sync": status.sync_status or "",
        "health": status.health_status or "",
        "operation": status.operation_phase or "",
        "seconds_to_converge": round(result.seconds, 2),
        "images": ", ".join(status.images),
    })
