"""Assembles the code location: assets, checks, jobs, sensor, schedule and resources from Settings."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from coelho_pipeline.assets.deploy import argocd_sync
from coelho_pipeline.assets.drift import live_state
from coelho_pipeline.assets.images import build_image_assets
from coelho_pipeline.assets.insight import delivery_metrics
from coelho_pipeline.assets.manifest import build_helm_values, manifest_commit
from coelho_pipeline.assets.rollback import release_hold, rollback_commit
from coelho_pipeline.assets.source import source_commit
from coelho_pipeline.catalog import apps_from_names, discover_apps
from coelho_pipeline.config import ConfigError, Settings
from coelho_pipeline.hold import delivery_hold
from coelho_pipeline.jobs import deliver_commit, delivery_insight, drift_check, rollback
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import ImageBuilderResource, RegistryResource
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.resources.storage import ValueStoreResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.resources.verify import MetricCheckConfig, VerificationResource
from coelho_pipeline.runbook_jobs import RUNBOOK_JOBS
from coelho_pipeline.schedules import delivery_insight_schedule, drift_check_schedule
from coelho_pipeline.sensors import build_git_push_sensor, delivery_failure_sensor


def build_definitions(settings: Settings, *, apps_root: Path | None = None) -> dg.Definitions:
    apps = apps_from_names(settings.apps) if settings.apps else discover_apps(apps_root or Path.cwd())
    if not apps:
        raise ConfigError(f"no apps/*/Dockerfile under {apps_root or Path.cwd()} and COELHO_APPS is not set")
    # Secrets go in as EnvVar so the UI and run metadata show the variable's name, never its value.
    secret = {name: dg.EnvVar(name) if value else None for name, value in (
        ("COELHO_GIT_TOKEN", settings.git_token),
        ("COELHO_REGISTRY_PASSWORD", settings.registry_password),
        ("COELHO_NOTIFY_WEBHOOKS", settings.notify_webhooks),
    )}
    return dg.Definitions(
        assets=[source_commit, build_image_assets(apps), build_helm_values(apps), manifest_commit, argocd_sync,
                live_state, rollback_commit, delivery_hold, delivery_metrics],
        jobs=[deliver_commit, drift_check, rollback, release_hold, delivery_insight, *RUNBOOK_JOBS],
        sensors=[build_git_push_sensor(settings.poll_interval), delivery_failure_sensor],
        schedules=[drift_check_schedule, delivery_insight_schedule],
        # One process per run, not per step: a step's start-up (imports, resources) cost seconds each.
        # Steps keep their own events, logs and retries in the UI.
        executor=dg.in_process_executor,
        resources={
            "io_manager": ValueStoreResource(),
            "git": GitResource(
                url=settings.git_url, branch=settings.git_branch, token=secret["COELHO_GIT_TOKEN"],
                cache_dir=str(Path(settings.workdir) / "git"),
                author_name=settings.author_name, author_email=settings.author_email,
            ),
            "registry": RegistryResource(
                prefix=settings.registry, username=settings.registry_username,
                password=secret["COELHO_REGISTRY_PASSWORD"],
            ),
            "builder": ImageBuilderResource(
                build_args=dict(settings.build_args), network_mode=settings.build_network,
                concurrency=settings.build_concurrency,
                registry_username=settings.registry_username, registry_password=secret["COELHO_REGISTRY_PASSWORD"],
            ),
            "argocd": ArgoCDResource(
                app_name=settings.argocd_app, namespace=settings.argocd_namespace,
                kubeconfig=settings.kubeconfig, context=settings.kube_context,
                sync_timeout_seconds=settings.sync_timeout,
            ),
            "notify": NotifierResource(
                webhooks=secret["COELHO_NOTIFY_WEBHOOKS"],
                state_dir=settings.notify_state_dir or str(Path(settings.workdir) / "notify"),
            ),
            "verification": VerificationResource(
                prometheus_url=settings.prometheus_url,
                checks=[MetricCheckConfig(name=c.name, query=c.query, min=c.min, max=c.max)
                        for c in settings.verify_checks],
                rollout_timeout_seconds=settings.rollout_timeout, soak_seconds=settings.verify_soak,
                interval_seconds=settings.verify_interval, auto_rollback=settings.auto_rollback,
            ),
            "target": DeliveryTargetResource(
                apps=[a.name for a in apps], values_path=settings.values_path, chart_path=settings.chart_path,
            ),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
