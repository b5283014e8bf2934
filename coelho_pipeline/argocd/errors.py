"""Argo CD errors: each message names the Application as ``namespace/name`` and never a credential.

They are ``PipelineError``s, so ``coelho_pipeline.errors.failure`` turns them into a retried or a
final Dagster failure; ``transient`` follows the HTTP status behind the error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coelho_pipeline.errors import PipelineError, http_status_is_transient

if TYPE_CHECKING:
    from coelho_pipeline.argocd.status import AppStatus


class ArgoCDError(PipelineError):
    """Base error. ``status_code`` is the HTTP status of the API failure behind it, if there was one.

    Transient when there was no answer at all (unreachable, timed out) or a 5xx/429-style answer;
    ``transient=`` overrides that for errors whose cause is not an HTTP exchange.
    """

    def __init__(self, message: str, *, status_code: int | None = None, transient: bool | None = None) -> None:
        # PipelineError's ``transient`` is a plain attribute; here it is derived, so keep the override apart.
        Exception.__init__(self, message)
        self.status_code = status_code
        self._transient_override = transient

    @property  # type: ignore[override]
    def transient(self) -> bool:
        if self._transient_override is not None:
            return self._transient_override
        return http_status_is_transient(self.status_code)


class ApplicationNotFound(ArgoCDError):
    """The Application does not exist (HTTP 404)."""

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return False


class ArgoCDPermissionError(ArgoCDError):
    """The API refused the credentials (401) or the ServiceAccount lacks an RBAC verb (403)."""

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return False


class KubeconfigError(ArgoCDError):
    """The kubeconfig (or in-cluster credentials) cannot be used; the message names the path."""

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return False


class SyncFailed(ArgoCDError):
    """Argo CD reported a terminal problem; ``status`` is the AppStatus that showed it.

    Raised for an operation that ended Failed/Error at the target revision, a
    ComparisonError/InvalidSpecError condition, and an Application that is at the target
    revision but still Degraded/Missing when the wait times out.
    """

    def __init__(self, message: str, *, status: AppStatus) -> None:
        super().__init__(message)
        self.status = status

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return False


class SyncTimeout(ArgoCDError):
    """The wait ran out; ``status`` is the last AppStatus seen (None if none could be read).

    Terminal when a status was read: the whole configured wait has been spent, and a retry would
    hold the one writer slot for that long again. Transient when the API never answered.
    """

    def __init__(self, message: str, *, status: AppStatus | None, timeout: float) -> None:
        super().__init__(message)
        self.status = status
        self.timeout = timeout

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return self.status is None


class RevisionNotOnBranch(ArgoCDError):
    """The delivery's manifest commit is no longer on the branch (history was rewritten)."""

    @property  # type: ignore[override]
    def transient(self) -> bool:
        return False
