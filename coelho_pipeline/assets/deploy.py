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
from coelho_pipeline.notify import Notification
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource
from coelho_pipeline.resources.git import GitRemote, GitResource
from coelho_pipeline.resources.notify import NotifierResource
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
    notify: NotifierResource,
) -> Iterator[dg.MaterializeResult]:
    """Syncs the Application to the branch head (which holds this delivery) and waits for Synced+Healthy.

    With no cluster configured (KUBECONFIG / COELHO_KUBE_CONTEXT unset) the run says so and ends
    without materializing this asset: a missing deployment is visible, never a silent pass.
    """
    metadata = sync_and_wait(context, argocd, git.remote(), target, manifest_commit)
    if metadata is not None:
        notify.send(context.log, Notification.delivered(
            application=str(metadata["application"]), revision=str(metadata["revision"]),
            source_commit=manifest_commit.source_sha, details={"images": str(metadata["images"])}))
        yield dg.MaterializeResult(metadata=metadata)


def sync_and_wait(context: dg.AssetExecutionContext, argocd: ArgoCDResource, remote: GitRemote,
                  target: DeliveryTargetResource, commit: ManifestCommit) -> dict[str, object] | None:
    """Syncs the Application to the branch head, if ``commit`` is on it, and waits for Synced+Healthy;
    the metadata of what was reached, or None (logged) when no cluster is configured."""
    try:
        client = argocd.client()
    except ArgoCDError as e:
        raise failure(e) from e
    if client is None:
        context.log.warning(
            "No cluster configured (KUBECONFIG and COELHO_KUBE_CONTEXT are unset): Argo CD was not asked to "
            f"sync {commit.sha}; {context.asset_key.to_user_string()} is left unmaterialized for this commit."
        )
        return None
    application = f"{argocd.namespace}/{argocd.app_name}"
    with client:
        try:
            plan = plan_sync(remote, target, commit, application=application)
            context.log.info(plan.story)
            client.refresh(hard=False)
            client.sync(revision=plan.revision, info={"dagster-run": context.run.run_id,
                                                      "source-commit": commit.source_sha})
            context.log.info(f"sync of {application} to {plan.revision} requested; waiting")
            result = client.wait_synced(revision=plan.revision, timeout=argocd.sync_timeout_seconds,
                                        accepts=plan.accepts)
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    status = result.status
    if result.reached_via:
        context.log.info(f"{application} reached {result.reached_via}, which still deploys this delivery")
    return {
        "application": application,
        "manifest_commit": commit.sha,
        "requested_revision": plan.revision,
        "revision": status.revision or "",
        "reached_via": result.reached_via or "the requested revision",
        "synced": plan.story,
        "sync": status.sync_status or "",
        "health": status.health_status or "",
        "operation": status.operation_phase or "",
        "seconds_to_converge": round(result.seconds, 2),
        "images": ", ".join(status.images),
    }
