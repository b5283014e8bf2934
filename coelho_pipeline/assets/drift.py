"""What runs in the cluster compared with what Git says should run."""

from collections.abc import Iterator

import dagster as dg

from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.notify import Notification
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource
from coelho_pipeline.resources.git import GitError, GitResource
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.targets import Target
from coelho_pipeline.values import ValuesError, read_scalar

LIVE_MATCHES_GIT = "live_matches_git"


NOT_CHECKED = "No cluster configured (KUBECONFIG and COELHO_KUBE_CONTEXT are unset): drift not checked."


# A multi_asset only so that, with can_subset, the check may go unevaluated: with no cluster the
# UI shows live_matches_git as skipped for that run (neither a false "passed" nor a red "failed"
# every ten minutes), and an observation on live_state says "not checked" and why.
def build_live_state(target: Target) -> dg.AssetsDefinition:
    key = target.key("live_state")

    @dg.multi_asset(
        name=target.name("live_state"),
        specs=[dg.AssetSpec(key, group_name=target.name("ops"), kinds={"kubernetes"}, skippable=True,
                            description="The Application's sync state and the images its Deployments run.")],
        check_specs=[dg.AssetCheckSpec(LIVE_MATCHES_GIT, asset=key,
                                       description="The Application is Synced at the branch head and every app "
                                                   "Deployment runs the image values.yaml names there.")],
        can_subset=True,
        retry_policy=RETRY_POLICY,
        required_resource_keys=required_keys(target, "git", "argocd", "target", "notify"),
    )
    def live_state(context: dg.AssetExecutionContext) -> Iterator[
            dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
        """The Application's sync state and the images its Deployments run, against the tags in Git."""
        res = TargetResources(context.resources, target)
        yield from _live_state(context, key, res.git, res.argocd, res.target, res.notify)

    return live_state


def _live_state(context: dg.AssetExecutionContext, key: dg.AssetKey, git: GitResource, argocd: ArgoCDResource,
                target: DeliveryTargetResource, notify: NotifierResource) -> Iterator[
        dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
    try:
        client = argocd.client()
    except ArgoCDError as e:
        raise failure(e) from e
    if client is None:
        context.log.warning(NOT_CHECKED)
        yield dg.AssetObservation(asset_key=key, metadata={"status": "not checked", "reason": NOT_CHECKED})
        return
    with client:
        remote = git.remote()
        try:
            head = remote.fetch()
            values_text = remote.read_file(head, target.values_path) or ""
            desired = {}
            for app in target.catalog():
                repository = read_scalar(values_text, app.repository_path, source=target.values_path)
                tag = read_scalar(values_text, app.tag_path, source=target.values_path)
                desired[f"{target.release_name}-{app.component}"] = f"{repository}:{tag}"
            # Verdicts are only as fresh as the last comparison: ask for one before reading.
            status = client.refresh_and_read()
            live = client.deployment_images(namespace=target.deploy_namespace)
        except (GitError, ValuesError, ArgoCDError) as e:
            raise failure(e) from e

    differences = []
    if status.revision != head:
        differences.append(f"Argo CD compared revision {status.revision or 'none'}, the branch head is {head}")
    if status.sync_status != "Synced":
        differences.append(f"Application is {status.sync_status or 'Unknown'}"
                           + (f": out of sync {', '.join(status.out_of_sync_resources)}"
                              if status.out_of_sync_resources else ""))
    if status.health_status != "Healthy":
        differences.append(f"Application health is {status.health_status or 'Unknown'}"
                           + (f" ({status.health_message})" if status.health_message else ""))
    for deployment, image in desired.items():
        running = live.get(deployment)
        if running is None:
            differences.append(f"Deployment {target.deploy_namespace}/{deployment} does not exist; Git wants {image}")
        elif image not in running:
            differences.append(f"Deployment {target.deploy_namespace}/{deployment} runs {', '.join(running)}; "
                               f"Git wants {image}")
    table = "\n".join(["| Deployment | Git | live |", "|---|---|---|"] +
                      [f"| {d} | {img} | {', '.join(live.get(d, ())) or 'missing'} |" for d, img in desired.items()])
    yield dg.MaterializeResult(asset_key=key, metadata={
        "status": "checked",
        "git_head": head,
        "live_revision": status.revision or "",
        "sync": status.sync_status or "",
        "health": status.health_status or "",
        "images": dg.MetadataValue.md(table),
    })
    if differences:  # one notification per revision and set of differences, however many ticks see it
        notify.send(context.log, Notification.drift_found(
            application=f"{argocd.namespace}/{argocd.app_name}", revision=head, differences=differences))
    yield dg.AssetCheckResult(
        asset_key=key, check_name=LIVE_MATCHES_GIT, passed=not differences,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"differences": dg.MetadataValue.md("\n".join(f"- {d}" for d in differences) or "none"),
                  "count": len(differences)},
    )
