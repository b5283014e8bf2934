"""Argo CD brings the cluster to the branch head; we wait until it is Synced and Healthy there,
then verify the rollout (every Deployment at its new generation, no restarts over the soak, the
metric checks within bounds) as the ``rollout_verified`` check.

The branch only moves forward under a delivery: a rerun of an old commit syncs the head (never
an older revision), and a push during the wait (ours or a human's) is success as long as the
revision Argo CD reached still deploys this delivery's images, or newer ones.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from coelho_pipeline.argocd import ArgoCDClient, SyncFailed, SyncTimeout
from coelho_pipeline.auto_rollback import DEPLOY_FAILURE_KEY, DeployFailure
from coelho_pipeline.delivery.deployed import DEPLOYED_COMMITS_KEY, SYNCED_AT_KEY, deployed_commits, previous_revision
from coelho_pipeline.delivery.sync import plan_sync
from coelho_pipeline.domain import ManifestCommit
from coelho_pipeline.errors import RETRY_POLICY, failure
from coelho_pipeline.notify import Notification
from coelho_pipeline.partitions import source_commits
from coelho_pipeline.resources import TargetResources, required_keys
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource
from coelho_pipeline.resources.git import GitRemote, GitResource
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.resources.verify import VerificationResource
from coelho_pipeline.rollout.prometheus import PrometheusError
from coelho_pipeline.rollout.verify import Outcome, RolloutReport, verify_rollout
from coelho_pipeline.rollout.workloads import WorkloadReader
from coelho_pipeline.targets import Target

ROLLOUT_CHECK = "rollout_verified"
NOT_VERIFIED = "not verified: no cluster is configured, so nothing was deployed"


def build_argocd_sync(target: Target) -> dg.AssetsDefinition:
    """The last asset of ``target``'s delivery graph: its Application Synced+Healthy, verified."""
    key = target.key("argocd_sync")

    @dg.asset(
        key=key,
        partitions_def=source_commits(target),
        group_name=target.name("delivery"),
        kinds={"kubernetes"},
        output_required=False,
        retry_policy=RETRY_POLICY,
        ins={"manifest_commit": dg.AssetIn(target.key("manifest_commit"))},
        required_resource_keys=required_keys(target, "argocd", "git", "target", "notify", "verification"),
        check_specs=[dg.AssetCheckSpec(ROLLOUT_CHECK, asset=key,
                                       description="After Synced+Healthy: every Deployment at its new generation, "
                                                   "no restarts over the soak window, metric checks within bounds.")],
    )
    def argocd_sync(context: dg.AssetExecutionContext,
                    manifest_commit: ManifestCommit) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Syncs the Application to the branch head (which holds this delivery), waits for Synced+Healthy,
        then verifies the rollout. A failed verification fails the step after recording both.

        With no cluster configured (KUBECONFIG / COELHO_KUBE_CONTEXT unset) the run says so and ends
        without materializing this asset: a missing deployment is visible, never a silent pass.
        """
        res = TargetResources(context.resources, target)
        yield from _argocd_sync(context, manifest_commit, res.argocd, res.git, res.target, res.notify,
                                res.verification)

    return argocd_sync


def _argocd_sync(context: dg.AssetExecutionContext, manifest_commit: ManifestCommit, argocd: ArgoCDResource,
                 git: GitResource, target: DeliveryTargetResource, notify: NotifierResource,
                 verification: VerificationResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    preflight_queries(context, verification)
    metadata = sync_and_wait(context, argocd, git.remote(), target, manifest_commit)
    if metadata is None:
        # Nothing was deployed, so nothing is verified: said as a warning, never a pass.
        yield dg.AssetCheckResult(check_name=ROLLOUT_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                  description=NOT_VERIFIED, metadata={"outcome": "not verified"})
        return
    metadata.update(record_deployed_commits(context, git.remote(), target, manifest_commit,
                                            application=str(metadata["application"]),
                                            revision=str(metadata["revision"])))
    try:
        report = verify_deployment(context, argocd, verification)
    except dg.Failure as e:
        # Deployed but not verifiable (a refused read, a query Prometheus rejects): recorded as such.
        yield dg.MaterializeResult(metadata={**metadata, "verification": "error"}, check_results=[
            dg.AssetCheckResult(check_name=ROLLOUT_CHECK, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                description=f"verification could not run: {e.description}",
                                metadata={"outcome": "error"})])
        raise
    yield dg.MaterializeResult(
        metadata={**metadata, "verification": report.outcome.value},
        check_results=[rollout_check_result(report)],
    )
    if report.outcome is Outcome.FAILED:
        raise dg.Failure(description=f"delivery of {manifest_commit.source_sha}: {report.summary()}",
                         metadata={"error": "RolloutVerificationFailed", "transient": False,
                                   DEPLOY_FAILURE_KEY: DeployFailure.VERIFICATION.value}, allow_retries=False)
    notify.send(context.log, Notification.delivered(
        application=str(metadata["application"]), revision=str(metadata["revision"]),
        source_commit=manifest_commit.source_sha,
        details={"images": str(metadata["images"]), "verification": report.outcome.value}))


def sync_and_wait(context: dg.AssetExecutionContext, argocd: ArgoCDResource, remote: GitRemote,
                  target: DeliveryTargetResource, commit: ManifestCommit) -> dict[str, object] | None:
    """Syncs the Application to the branch head, if ``commit`` is on it, and waits for Synced+Healthy;
    the metadata of what was reached, or None (logged) when no cluster is configured."""
    client = _client(argocd)
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
        except SyncFailed as e:
            kind = DeployFailure.DEGRADED if e.status.health_status == "Degraded" else DeployFailure.SYNC
            raise failure(e, metadata={DEPLOY_FAILURE_KEY: kind.value}) from e
        except SyncTimeout as e:
            # Applied (Synced) but never Healthy within the wait: the release itself did not come up (a crash
            # loop, an image that cannot be pulled). Not reached or not read: the cluster may still converge.
            applied = (e.status is not None and e.status.sync_status == "Synced"
                       and e.status.operation_phase == "Succeeded")
            extra = {DEPLOY_FAILURE_KEY: DeployFailure.UNHEALTHY.value} if applied else None
            raise failure(e, metadata=extra) from e
        except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
            raise failure(e) from e
    status = result.status
    synced_at = datetime.now(UTC)
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
        SYNCED_AT_KEY: synced_at.isoformat(),
        "images": ", ".join(status.images),
    }


def record_deployed_commits(context: dg.AssetExecutionContext, remote: GitRemote, target: DeliveryTargetResource,
                            commit: ManifestCommit, *, application: str, revision: str) -> dict[str, object]:
    """The source commits this deployment brought to production (see delivery.deployed), as metadata.

    The delivery is deployed by now: a git error here costs the per-commit record (lead time then
    counts the source commit alone), never the delivery."""
    try:
        previous = previous_revision(context.instance, context.asset_key, application, run_id=context.run.run_id)
        commits = deployed_commits(remote, target.catalog(), previous=previous, revision=revision,
                                   source=remote.commit_info(commit.source_sha))
    except Exception as e:  # noqa: BLE001 - see the docstring
        context.log.warning(f"the commits this deployment brought could not be read ({type(e).__name__}: {e}); "
                            "lead time counts the source commit only")
        return {}
    return {DEPLOYED_COMMITS_KEY: dg.MetadataValue.json([c.to_json() for c in commits]),
            "commits_deployed": len(commits)}


def preflight_queries(context: dg.AssetExecutionContext, verification: VerificationResource) -> None:
    """Each metric check's query once, before anything is synced: a query Prometheus rejects fails here,
    not after the release is live. Prometheus being unreachable now only warns; the soak retries."""
    prometheus = verification.prometheus()
    if prometheus is None:
        return
    try:
        for check in verification.policy().checks:
            try:
                prometheus.query(check.query)
            except PrometheusError as e:
                if e.transient:
                    context.log.warning(f"metric check {check.name}: {e}; verifying anyway after the sync")
                    return
                raise failure(e, context=f"metric check {check.name} (COELHO_VERIFY_QUERIES), before syncing "
                                         "anything") from e
    finally:
        prometheus.close()


def verify_deployment(context: dg.AssetExecutionContext, argocd: ArgoCDResource,
                      verification: VerificationResource) -> RolloutReport:
    """Verifies the rollout of every Deployment the Application manages (see rollout.verify)."""
    client = _client(argocd)
    if client is None:
        raise dg.Failure("rollout verification needs a cluster, and none is configured", allow_retries=False)
    prometheus = verification.prometheus()
    policy = verification.policy()
    try:
        with client:
            deployments = [(r.namespace, r.name) for r in client.resources()
                           if r.kind == "Deployment" and r.group == "apps"]
            reader = WorkloadReader(client.api_client, request_timeout=client.request_timeout)
            context.log.info(f"verifying the rollout of {len(deployments)} Deployment(s); soak "
                             f"{policy.soak_seconds:g}s, {len(policy.checks)} metric check(s)")
            report = verify_rollout(reader, prometheus, deployments, policy, log=context.log.info)
    except Exception as e:  # noqa: BLE001 - classified once, in errors.failure
        raise failure(e, context="rollout verification") from e
    finally:
        if prometheus is not None:
            prometheus.close()
    (context.log.info if report.outcome is Outcome.PASSED else context.log.warning)(report.summary())
    return report


def rollout_check_result(report: RolloutReport) -> dg.AssetCheckResult:
    """The ``rollout_verified`` evaluation: failed is an error, inconclusive a warning that says why."""
    rows = "\n".join(f"| `{s.ref}` | {s.generation} | {s.observed_generation} | {s.replicas} | {s.updated} | "
                     f"{s.available} | {s.problem() or 'rolled out'} |" for s in report.deployments)
    findings = "\n".join(f"- **{f.outcome.value}** {f.message}" for f in report.findings)
    return dg.AssetCheckResult(
        check_name=ROLLOUT_CHECK,
        passed=report.outcome is Outcome.PASSED,
        severity=dg.AssetCheckSeverity.ERROR if report.outcome is Outcome.FAILED else dg.AssetCheckSeverity.WARN,
        description=report.summary(),
        metadata={
            "outcome": report.outcome.value,
            "findings": dg.MetadataValue.md(findings or "none"),
            "deployments": dg.MetadataValue.md(
                "| Deployment | generation | observed | replicas | updated | available | state |\n"
                "|---|---|---|---|---|---|---|\n" + rows if rows else "none"),
            "samples": dg.MetadataValue.json(report.samples),
            "sample_count": len(report.samples),
            "seconds": round(report.seconds, 2),
        },
    )


def _client(argocd: ArgoCDResource) -> ArgoCDClient | None:
    try:
        return argocd.client()
    except ArgoCDError as e:
        raise failure(e) from e
