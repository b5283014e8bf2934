"""Transient or terminal: the one place where a pipeline error becomes a Dagster retry or failure.

Every client error (git, registry, builder, Argo CD, values, chart) derives from ``PipelineError``
and says whether another attempt may succeed. Assets raise ``failure(e)``; the declared
``RETRY_POLICY`` then retries transient failures with backoff, and terminal ones fail at once.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

# HTTP statuses another attempt may not see: timeouts and rate limits; besides, every 5xx.
TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429})

# Declared once, attached to every delivery asset: retries apply only to failures that allow them.
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class PipelineError(Exception):
    """A failure whose message names the object at fault (file and line, image, remote, Application).

    ``transient`` is True when another attempt may succeed (unreachable, 5xx, 429, timeouts) and
    False for bad input, refused credentials, a failed build or a 4xx answer.
    """

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only state must survive pickling (multiprocess executor, error serialisers).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[PipelineError], args: tuple[Any, ...], state: dict[str, Any]) -> PipelineError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help. Anything that is not a PipelineError is terminal, except timeouts
    and connection failures from the standard library."""
    if isinstance(error, PipelineError) or hasattr(error, "transient"):
        return bool(getattr(error, "transient", False))
    return isinstance(error, (TimeoutError, ConnectionError))


def http_status_is_transient(status: int | None) -> bool:
    """No status (the request never got an answer), a server error (5xx) or one of TRANSIENT_HTTP_STATUS."""
    return status is None or status >= 500 or status in TRANSIENT_HTTP_STATUS


def failure(error: BaseException, *, context: str | None = None,
            metadata: dict[str, Any] | None = None) -> dg.Failure:
    """The Dagster failure for ``error``: retried by RETRY_POLICY if transient, final otherwise.

    ``raise failure(e) from e`` keeps the cause chain in the event log; ``metadata`` adds to the
    failure event what a sensor reading it needs (e.g. the kind of deploy failure).
    """
    transient = is_transient(error)
    message = f"{context}: {error}" if context else str(error)
    return dg.Failure(
        description=message,
        metadata={"error": type(error).__name__, "transient": transient, **(metadata or {})},
        allow_retries=transient,
    )
