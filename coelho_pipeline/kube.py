"""What every Kubernetes API caller here needs to say about a failed request, whatever it reads."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import urllib3

if TYPE_CHECKING:
    from kubernetes.client import ApiException


def api_message(e: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, one line, bounded; never headers."""
    try:
        body = json.loads(e.body) if e.body else None
    except (TypeError, ValueError):
        return ""
    msg = body.get("message") if isinstance(body, dict) else None
    return first_line(msg)[:300] if isinstance(msg, str) else ""


def timeout_cause(e: BaseException) -> BaseException | None:
    """The timeout behind ``e`` (urllib3 raises it directly, or inside MaxRetryError when retrying)."""
    for candidate in (e, getattr(e, "reason", None)):
        # NewConnectionError (refused, no route) subclasses ConnectTimeoutError for old callers.
        if isinstance(candidate, urllib3.exceptions.NewConnectionError):
            return None
        if isinstance(candidate, (urllib3.exceptions.TimeoutError, TimeoutError)):
            return candidate
    return None


def timeout_phase(e: BaseException) -> str:
    """"connect" or "read": which bound of a ``(connect, read)`` request timeout ran out."""
    return "connect" if isinstance(e, urllib3.exceptions.ConnectTimeoutError) else "read"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""
