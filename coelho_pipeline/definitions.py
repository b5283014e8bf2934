"""Assembles the code location: one delivery graph (assets, checks, jobs, sensors, schedules,
resources) per target, merged. Targets come from the COELHO_TARGETS file, or else are the one
project and environment the COELHO_* variables describe."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from coelho_pipeline.assets.deploy import build_argocd_sync
from coelho_pipeline.assets.drift import build_live_state
from coelho_pipeline.assets.images import build_image_assets
from coelho_pipeline.assets.insight import build_delivery_metrics
from coelho_pipeline.assets.manifest import build_helm_values, build_manifest_commit
from coelho_pipeline.assets.rollback import build_release_hold, build_rollback_commit
from coelho_pipeline.assets.source import build_promoted_source_commit, build_source_commit
from coelho_pipeline.catalog import apps_from_names, discover_apps
from coelho_pipeline.config import ConfigError, Settings
from coelho_pipeline.hold import delivery_hold
from coelho_pipeline.jobs import build_jobs
from coelho_pipeline.resources import resource_key
from coelho_pipeline.resources.argocd import ArgoCDResource
from coelho_pipeline.resources.git import GitResource
from coelho_pipeline.resources.images import ImageBuilderResource, RegistryResource
from coelho_pipeline.resources.notify import NotifierResource
from coelho_pipeline.resources.storage import ValueStoreResource
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.resources.verify import MetricCheckConfig, VerificationResource
from coelho_pipeline.runbook_jobs import build_runbook_jobs
from coelho_pipeline.schedules import build_schedules
from coelho_pipeline.sensors import build_delivery_failure_sensor, build_git_push_sensor, build_promotion_sensor
from coelho_pipeline.targets import Target, load_targets, targets_from_settings, upstream_of


def build_definitions(settings: Settings, *, apps_root: Path | None = None) -> dg.Definitions:
    root = apps_root or Path.cwd()
    if settings.targets_file:
        targets = load_targets(settings.targets_file, apps_root=root)
    else:
        apps = apps_from_names(settings.apps) if settings.apps else discover_apps(root)
        if not apps:
            raise ConfigError(f"no apps/*/Dockerfile under {root} and COELHO_APPS is not set")
        targets = targets_from_settings(settings, apps)
    return dg.Definitions.merge(
        shared_definitions(settings),
        *(target_definitions(target, settings, upstream=upstream_of(target, targets)) for target in targets),
    )


def shared_definitions(settings: Settings) -> dg.Definitions:
    """What every target uses alike: the value store, notifications, the rollout verification."""
    notify_webhooks = dg.EnvVar("COELHO_NOTIFY_WEBHOOKS") if settings.notify_webhooks else None
    return dg.Definitions(
        # One process per run, not per step: a step's start-up (imports, resources) cost seconds each.
        # Steps keep their own events, logs and retries in the UI.
        executor=dg.in_process_executor,
        resources={
            "io_manager": ValueStoreResource(),
            "notify": NotifierResource(
                webhooks=notify_webhooks,
                state_dir=settings.notify_state_dir or str(Path(settings.workdir) / "notify"),
            ),
            "verification": VerificationResource(
                prometheus_url=settings.prometheus_url,
                checks=[MetricCheckConfig(name=c.name, query=c.query, min=c.min, max=c.max)
                        for c in settings.verify_checks],
                rollout_timeout_seconds=settings.rollout_timeout, soak_seconds=settings.verify_soak,
                interval_seconds=settings.verify_interval, auto_rollback=settings.auto_rollback,
            ),
        },
    )


def target_definitions(target: Target, settings: Settings, *, upstream: Target | None = None) -> dg.Definitions:
    """One target's delivery graph, with its names and resource keys (see targets.Target.name).

    A target promoted from ``upstream`` starts from upstream's verified deliveries instead of
    pushes: its first asset depends on upstream's ``argocd_sync`` (the lineage in the UI), it builds
    nothing, and it has no push sensor; with ``promotion: auto`` a sensor promotes each delivery.
    """
    apps = target.project.apps
    jobs = build_jobs(target)
    if upstream is None:
        first = build_source_commit(target)
        sensors = [build_git_push_sensor(target, jobs, settings.poll_interval)]
    else:
        first = build_promoted_source_commit(target, upstream)
        auto = target.environment.promotion == "auto"
        sensors = [build_promotion_sensor(target, upstream, jobs)] if auto else []
    return dg.Definitions(
        assets=[first, build_image_assets(target, apps), build_helm_values(target, apps),
                build_manifest_commit(target), build_argocd_sync(target), build_live_state(target),
                build_rollback_commit(target), delivery_hold(target), build_delivery_metrics(target)],
        jobs=[*jobs.all(), build_release_hold(target), *build_runbook_jobs(target)],
        sensors=[*sensors, build_delivery_failure_sensor(target, jobs)],
        schedules=build_schedules(target, jobs),
        resources={resource_key(target, base): resource
                   for base, resource in _target_resources(target, settings).items()},
    )


def _target_resources(target: Target, settings: Settings) -> dict[str, dg.ConfigurableResource]:
    project, environment = target.project, target.environment
    # Secrets go in as EnvVar so the UI and run metadata show the variable's name, never its value.
    token = dg.EnvVar(project.git_token_env) if project.git_token_env else None
    password = dg.EnvVar(project.registry_password_env) if project.registry_password_env else None
    # Each target has its own cache clone: two targets never fetch into one repository at once.
    cache = Path(settings.workdir) / "git"
    if not target.single:
        cache = cache / project.name / environment.name
    return {
        "git": GitResource(
            url=project.git_url, branch=project.git_branch, token=token, cache_dir=str(cache),
            author_name=settings.author_name, author_email=settings.author_email,
            # Several environments write to the project's branch: each finds its own commits by file.
            values_file=environment.values_path if len(project.environments) > 1 else "",
        ),
        "registry": RegistryResource(prefix=project.registry, username=project.registry_username, password=password),
        "builder": ImageBuilderResource(
            build_args=dict(settings.build_args), network_mode=settings.build_network,
            concurrency=settings.build_concurrency,
            registry_username=project.registry_username, registry_password=password,
        ),
        "argocd": ArgoCDResource(
            app_name=environment.argocd_app, namespace=environment.argocd_namespace,
            kubeconfig=settings.kubeconfig, context=settings.kube_context,
            sync_timeout_seconds=settings.sync_timeout,
        ),
        "target": DeliveryTargetResource(
            apps=[a.name for a in project.apps], values_path=environment.values_path,
            chart_path=environment.chart_path, deploy_namespace=environment.deploy_namespace,
            release_name=environment.release_name or environment.argocd_app,
            application_path=environment.application_path,
            other_values_paths=[e.values_path for e in project.environments if e is not environment],
            app_contexts={a.name: a.build_context for a in project.apps if a.build_context},
            app_values_keys={a.name: a.values_key_path for a in project.apps if a.values_key_path},
        ),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
