"""Argo CD through the Kubernetes API: errors, the parsed Application status, the verdict, the client."""

from coelho_pipeline.argocd.client import (
    DEFAULT_REQUEST_TIMEOUT,
    GROUP,
    PLURAL,
    VERSION,
    ArgoCDClient,
    check_kubeconfig,
    kubeconfig_paths,
)
from coelho_pipeline.argocd.errors import (
    ApplicationNotFound,
    ArgoCDError,
    ArgoCDPermissionError,
    KubeconfigError,
    RevisionNotOnBranch,
    SyncFailed,
    SyncTimeout,
)
from coelho_pipeline.argocd.status import (
    ERROR_CONDITIONS,
    FAILED_PHASES,
    IN_PROGRESS_PHASES,
    REFRESH_ANNOTATION,
    AppStatus,
    SyncResult,
    parse_timestamp,
)
from coelho_pipeline.argocd.verdict import UNHEALTHY, WAITING_HEALTH, Acceptance, Verdict, assess, same_revision

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT", "ERROR_CONDITIONS", "FAILED_PHASES", "GROUP", "IN_PROGRESS_PHASES", "PLURAL",
    "REFRESH_ANNOTATION", "UNHEALTHY", "VERSION", "WAITING_HEALTH", "Acceptance", "AppStatus", "ApplicationNotFound",
    "ArgoCDClient", "ArgoCDError", "ArgoCDPermissionError", "KubeconfigError", "RevisionNotOnBranch", "SyncFailed",
    "SyncResult", "SyncTimeout", "Verdict", "assess", "check_kubeconfig", "kubeconfig_paths", "parse_timestamp",
    "same_revision",
]
