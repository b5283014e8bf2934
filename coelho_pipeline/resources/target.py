"""Where in the repository the pipeline works: the apps, the values file, the chart."""

from __future__ import annotations

import dagster as dg

from coelho_pipeline.catalog import App, apps_from_names


class DeliveryTargetResource(dg.ConfigurableResource):
    """The apps to deliver and the files of the chart they are deployed with."""

    apps: list[str]
    values_path: str = "k3d/helm/values.yaml"
    chart_path: str = "k3d/helm"
    application_path: str = "k3d/argocd/application.yaml"
    deploy_namespace: str = "coelho-realtime"
    release_name: str = "coelho-realtime"
    # How the single writer retries a push the remote rejected because the branch moved.
    push_attempts: int = 6
    push_backoff_seconds: list[float] = [0.5, 1.0, 2.0, 4.0, 8.0]

    def catalog(self) -> tuple[App, ...]:
        return apps_from_names(self.apps)
