"""The Argo CD Application the pipeline drives, as a Dagster resource.

The client, its errors, the parsed status and the verdict live in ``coelho_pipeline.argocd``;
they are re-exported here so imports from this module keep working.
"""

from __future__ import annotations

import os

import dagster as dg

from coelho_pipeline.argocd import *  # noqa: F403 - the re-export this module exists for
from coelho_pipeline.argocd import __all__ as _argocd_all
from coelho_pipeline.argocd import DEFAULT_REQUEST_TIMEOUT, ArgoCDClient

__all__ = [*_argocd_all, "ArgoCDResource"]


class ArgoCDResource(dg.ConfigurableResource):
    """The Argo CD Application the pipeline drives.

    Wired from KUBECONFIG, COELHO_KUBE_CONTEXT, COELHO_ARGOCD_APP, COELHO_ARGOCD_NAMESPACE and
    COELHO_SYNC_TIMEOUT. With no kubeconfig, no context and no in-cluster environment there is
    no cluster, and ``client()`` returns None so assets can skip the hand-off explicitly.
    """

    app_name: str = "coelho-realtime"
    namespace: str = "argocd"
    kubeconfig: str | None = None
    context: str | None = None
    sync_timeout_seconds: float = 600
    # Bounds for each Kubernetes API request (the sync wait has its own, sync_timeout_seconds).
    connect_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT[0]
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT[1]

    @property
    def cluster_configured(self) -> bool:
        return bool(self.kubeconfig or self.context or os.environ.get("KUBERNETES_SERVICE_HOST"))

    def client(self) -> ArgoCDClient | None:
        """A client for the configured Application, or None when no cluster is configured.

        Raises:
            KubeconfigError: the kubeconfig is unreadable, not YAML or defines no cluster (names the path).
        """
        if not self.cluster_configured:
            return None
        return ArgoCDClient.from_kubeconfig(
            kubeconfig=self.kubeconfig or None,
            context=self.context or None,
            app_name=self.app_name,
            namespace=self.namespace,
            request_timeout=(self.connect_timeout_seconds, self.request_timeout_seconds),
        )
