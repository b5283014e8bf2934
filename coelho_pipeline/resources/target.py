"""Where in the repository the pipeline works: the apps, the values file, the chart."""

from __future__ import annotations

import dagster as dg

from coelho_pipeline.catalog import App


class DeliveryTargetResource(dg.ConfigurableResource):
    """The apps to deliver and the files of the chart they are deployed with."""

    apps: list[str]
    # Where an app's build context or values block is not the convention (apps/<name>, camelCase key).
    app_contexts: dict[str, str] = {}
    app_values_keys: dict[str, str] = {}
    # The values files of the project's other environments on the same branch.
    other_values_paths: list[str] = []
    values_path: str = "k3d/helm/values.yaml"
    chart_path: str = "k3d/helm"
    application_path: str = "k3d/argocd/application.yaml"
    deploy_namespace: str = "coelho-realtime"
    release_name: str = "coelho-realtime"
    # How the single writer retries a push the remote rejected because the branch moved.
    push_attempts: int = 6
    push_backoff_seconds: list[float] = [0.5, 1.0, 2.0, 4.0, 8.0]

    def catalog(self) -> tuple[App, ...]:
        return tuple(App(name, build_context=self.app_contexts.get(name, ""),
                         values_key_path=self.app_values_keys.get(name, "")) for name in self.apps)
