"""Webhook notifications (Slack-compatible or plain JSON), sent exactly once per event and revision.

A plain module with no Dagster inside: assets, sensors and jobs build a ``Notification`` (the
factories below give each event its dedup key) and call ``Notifier.send``. Each webhook is tried a
bounded number of times (connect/read timeouts on every request, backoff on transient answers,
Retry-After honoured up to a cap) and is recorded as sent in a ``SentLog`` only after a 2xx answer,
so a rerun, a retry of the step or the next sensor tick finds it there and does not send it again.

A failing webhook never fails a delivery: ``send`` returns one ``SendResult`` per webhook and logs;
``raise_on_failure`` is there for a caller that wants an exception. Webhook URLs usually carry a
token in their path (Slack's do), so they are shown as ``scheme://host/…`` everywhere: logs, results,
exceptions, and even urllib3's own debug lines. Values the notifier is told are secret are replaced
by ``***`` in every string of every payload.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from coelho_pipeline.config import ConfigError
from coelho_pipeline.errors import PipelineError, http_status_is_transient
from coelho_pipeline.loopback import is_loopback

log = logging.getLogger(__name__)

WEBHOOKS_VAR = "COELHO_NOTIFY_WEBHOOKS"
STATE_DIR_VAR = "COELHO_NOTIFY_STATE_DIR"

DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_TIMEOUT = (3.05, 10.0)  # (connect, read) seconds for each request
DEFAULT_RETRY_AFTER_CAP = 30.0  # longest Retry-After obeyed; a delivery step must not wait minutes
_REDACTED = "***"
_MAX_ERROR_CHARS = 1500  # an error is evidence, not a log dump; Slack limits a section to 3000


class NotifyError(PipelineError):
    """A notification could not be sent to every webhook; the message shows webhooks as scheme://host/…."""


class Event(str, enum.Enum):
    DELIVERED = "delivered"  # Synced+Healthy at the revision
    DELIVERY_FAILED = "delivery_failed"  # a step failed for good, with its error
    ROLLED_BACK = "rolled_back"
    HOLD_SET = "hold_set"
    HOLD_RELEASED = "hold_released"
    DRIFT_FOUND = "drift_found"


_TITLES = {
    Event.DELIVERED: ("white_check_mark", "Delivered"),
    Event.DELIVERY_FAILED: ("x", "Delivery failed"),
    Event.ROLLED_BACK: ("rewind", "Rolled back"),
    Event.HOLD_SET: ("octagonal_sign", "Hold set"),
    Event.HOLD_RELEASED: ("arrow_forward", "Hold released"),
    Event.DRIFT_FOUND: ("warning", "Drift found"),
}


def _now() -> datetime:
    return datetime.now(UTC)


def _short(sha: str) -> str:
    return sha[:12]


@dataclass(frozen=True)
class Notification:
    """One event about one Application. ``key`` is what makes it exactly-once: the same key is never
    sent twice to the same webhook. The factories (``Notification.delivered(...)`` etc.) build keys
    from the event and revision; build one directly only with a key of the same kind."""

    event: Event
    key: str
    summary: str
    details: Mapping[str, str]
    revision: str
    source_commit: str
    application: str
    occurred_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", Event(self.event))
        if not self.key.strip():
            raise ValueError("Notification.key must not be empty: it is what keeps the notification exactly-once")
        # A read-only copy: the caller's dict may change after the notification was built.
        object.__setattr__(self, "details", MappingProxyType({str(k): str(v) for k, v in self.details.items()}))
        if self.occurred_at.tzinfo is None:
            raise ValueError("Notification.occurred_at must be timezone-aware")

    def __hash__(self) -> int:  # details is a mapping proxy, which does not hash
        return hash((self.event, self.key))

    @staticmethod
    def default_key(event: Event | str, application: str, revision: str, *extra: str) -> str:
        return ":".join((Event(event).value, application, revision, *extra))

    @classmethod
    def delivered(cls, *, application: str, revision: str, source_commit: str,
                  details: Mapping[str, str] | None = None) -> Notification:
        """Argo CD reported Synced+Healthy at ``revision`` (the manifest commit) for ``source_commit``."""
        return cls(Event.DELIVERED, cls.default_key(Event.DELIVERED, application, revision),
                   f"{application} delivered {_short(source_commit)}: Synced and Healthy at {_short(revision)}",
                   dict(details or {}), revision, source_commit, application)

    @classmethod
    def delivery_failed(cls, *, application: str, source_commit: str, step: str, error: str,
                        revision: str | None = None, details: Mapping[str, str] | None = None) -> Notification:
        """``step`` failed for good. One notification per commit and step: the retries of a step and
        reruns that fail the same way say nothing new. ``revision`` defaults to the source commit
        (a failure before the manifest commit has no other)."""
        revision = revision or source_commit
        error = error if len(error) <= _MAX_ERROR_CHARS else error[:_MAX_ERROR_CHARS] + "…"
        return cls(Event.DELIVERY_FAILED,
                   cls.default_key(Event.DELIVERY_FAILED, application, source_commit, step),
                   f"{application}: delivery of {_short(source_commit)} failed at {step}",
                   {"step": step, "error": error, **(details or {})}, revision, source_commit, application)

    @classmethod
    def rolled_back(cls, *, application: str, revision: str, to_commit: str, from_commit: str,
                    details: Mapping[str, str] | None = None) -> Notification:
        """The rollback commit ``revision`` restored ``to_commit``'s images in place of ``from_commit``'s."""
        return cls(Event.ROLLED_BACK, cls.default_key(Event.ROLLED_BACK, application, revision),
                   f"{application} rolled back to {_short(to_commit)} (from {_short(from_commit)})",
                   {"rolled_back_to": to_commit, "rolled_back_from": from_commit, **(details or {})},
                   revision, to_commit, application)

    @classmethod
    def hold_set(cls, *, application: str, revision: str, source_commit: str, reason: str, since: datetime,
                 details: Mapping[str, str] | None = None) -> Notification:
        """A hold keeps automation at ``source_commit``. Keyed by its ``since`` too: a second hold at
        the same revision after a release is news."""
        since_text = since.isoformat()
        return cls(Event.HOLD_SET, cls.default_key(Event.HOLD_SET, application, revision, since_text),
                   f"{application} held at {_short(source_commit)} since {since_text}: {reason}",
                   {"reason": reason, "since": since_text, **(details or {})}, revision, source_commit, application)

    @classmethod
    def hold_released(cls, *, application: str, revision: str, source_commit: str, since: datetime,
                      details: Mapping[str, str] | None = None) -> Notification:
        """The hold set at ``since`` was lifted; ``source_commit`` is what gets delivered next."""
        since_text = since.isoformat()
        return cls(Event.HOLD_RELEASED, cls.default_key(Event.HOLD_RELEASED, application, revision, since_text),
                   f"{application}: hold (since {since_text}) released, delivering {_short(source_commit)}",
                   {"held_since": since_text, **(details or {})}, revision, source_commit, application)

    @classmethod
    def drift_found(cls, *, application: str, revision: str, differences: Sequence[str],
                    source_commit: str | None = None) -> Notification:
        """The live state differs from Git at ``revision``. The same differences at the same revision
        (every schedule tick until someone acts) are one notification; new differences are another."""
        digest = hashlib.sha256("\n".join(sorted(differences)).encode()).hexdigest()[:16]
        return cls(Event.DRIFT_FOUND, cls.default_key(Event.DRIFT_FOUND, application, revision, digest),
                   f"{application} drifted from Git at {_short(revision)}: {len(differences)} difference(s)",
                   {f"difference {i}": d for i, d in enumerate(differences, 1)},
                   revision, source_commit or revision, application)


# ---------------------------------------------------------------------------------------------------
# Where "already sent" is remembered


class SentLog(Protocol):
    """What was sent. ``exclusive(key)`` serialises senders of the same key (two sensor ticks, a
    rerun overlapping a retry) so that the check-send-record sequence happens once; a store that
    cannot lock may return a null context and accept a rare double send."""

    def seen(self, key: str) -> bool: ...

    def record(self, key: str) -> None: ...

    def exclusive(self, key: str) -> AbstractContextManager[None]: ...


class MemorySentLog:
    """In-process only (tests, a notifier without a state directory): forgets on exit."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def seen(self, key: str) -> bool:
        with self._guard:
            return key in self._keys

    def record(self, key: str) -> None:
        with self._guard:
            self._keys.add(key)

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class FileSentLog:
    """JSON lines in ``<directory>/sent.jsonl``, one per notification sent to one webhook.

    Appends and reads go under ``flock`` on that file, so processes (the daemon's sensor, run
    workers, the CLI) share it safely; a line torn by a crash is skipped. ``exclusive`` takes a
    per-key lock file under ``locks/`` for as long as one sender needs, waiting at most
    ``lock_wait`` seconds (more than a sender's worst case with the defaults: 4 attempts of 13 s
    plus Retry-After waits of up to 30 s). No URL is ever written: keys name webhooks by a hash.
    """

    def __init__(self, directory: str | os.PathLike[str], *, lock_wait: float = 180.0) -> None:
        self.directory = Path(directory)
        self.lock_wait = lock_wait
        (self.directory / "locks").mkdir(parents=True, exist_ok=True)
        self._path = self.directory / "sent.jsonl"

    def seen(self, key: str) -> bool:
        try:
            with open(self._path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_SH)
                try:
                    data = handle.read()
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        except FileNotFoundError:
            return False
        for line in data.splitlines():
            try:
                if json.loads(line).get("key") == key:
                    return True
            except (ValueError, AttributeError):
                continue  # torn by a crash mid-append
        return False

    def record(self, key: str) -> None:
        line = json.dumps({"key": key, "at": _now().isoformat()}, ensure_ascii=False) + "\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        path = self.directory / "locks" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.lock_wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise NotifyError(f"another process has been sending this notification for over "
                                          f"{self.lock_wait:g}s (lock in {self.directory})", transient=True) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------
# Webhooks and what is never shown of them

# URL paths and queries of every webhook configured in this process. urllib3 logs request lines
# ("POST /services/T/B/token") at DEBUG on its own loggers; a filter there redacts them.
_SENSITIVE_URL_PARTS: set[str] = set()
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry",
                    "urllib3.poolmanager", "urllib3.response")


class _RedactUrlParts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        parts = sorted(_SENSITIVE_URL_PARTS, key=len, reverse=True)
        if not parts:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to break
            return True
        redacted = message
        for part in parts:
            redacted = redacted.replace(part, "/…")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = _RedactUrlParts()
_FILTER_LOCK = threading.Lock()


def _protect_url(url: str) -> None:
    parts = urlsplit(url)
    with _FILTER_LOCK:
        for part in (parts.path + (f"?{parts.query}" if parts.query else ""), parts.path, parts.query):
            if len(part) > 1:
                _SENSITIVE_URL_PARTS.add(part)
        for name in _URLLIB3_LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)


class Format(str, enum.Enum):
    SLACK = "slack"
    JSON = "json"


def display_url(url: str) -> str:
    """``scheme://host[:port]/…``: enough to tell webhooks apart, never the path that holds the token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/…"


@dataclass(frozen=True)
class Webhook:
    """A URL to POST to and the payload it understands. https://, or plain http:// to loopback only:
    the URL is the credential."""

    format: Format
    url: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "format", Format(self.format))
        except ValueError:
            raise ValueError(f"webhook format must be slack or json, not {str(self.format)[:20]!r}") from None
        try:
            parts = urlsplit(self.url)
            host, _ = parts.hostname, parts.port
        except ValueError:
            raise ValueError("webhook URL is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"webhook URL {display_url(self.url)} must be https://host/… "
                             "(or http:// to a loopback address)")
        if parts.scheme == "http" and not is_loopback(host):
            raise ValueError(f"webhook URL {display_url(self.url)} is plain http:// to a non-loopback host: "
                             "use https:// (the URL carries the webhook's token)")
        _protect_url(self.url)

    @property
    def display(self) -> str:
        return display_url(self.url)

    @property
    def id(self) -> str:
        """Stable name in the sent log: a hash, so the state directory holds no token."""
        return hashlib.sha256(f"{self.format.value} {self.url}".encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.format.value} webhook {self.display}"


# ---------------------------------------------------------------------------------------------------
# Results


class Outcome(str, enum.Enum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # recorded as sent before: not sent again
    FAILED = "failed"


@dataclass(frozen=True)
class SendResult:
    webhook: str  # "<format> webhook scheme://host/…"
    outcome: Outcome
    key: str
    attempts: int = 0
    status: int | None = None
    reason: str = ""
    transient: bool = False  # for FAILED: another send later may succeed

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAILED


def raise_on_failure(results: Sequence[SendResult]) -> None:
    """For a caller that wants a failed webhook to be an error: NotifyError, transient only if every
    failure was."""
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    if failed:
        raise NotifyError("; ".join(f"{r.webhook}: {r.reason}" for r in failed),
                          transient=all(r.transient for r in failed))


# ---------------------------------------------------------------------------------------------------
# Payloads


def _scrubber(secrets: Collection[str]) -> Callable[[str], str]:
    # Longest first, so that a secret containing another is replaced whole.
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.add(secret)
            forms.add(quote(secret, safe=""))  # as it would appear inside a URL
    ordered = sorted(forms, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    return scrub


def _scrub_all(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub(str(k)): _scrub_all(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_all(v, scrub) for v in value]
    return value


def json_payload(notification: Notification) -> dict[str, Any]:
    """The plain JSON document (before scrubbing). ``key`` lets a receiver deduplicate too."""
    return {
        "event": notification.event.value,
        "application": notification.application,
        "revision": notification.revision,
        "source_commit": notification.source_commit,
        "summary": notification.summary,
        "details": dict(notification.details),
        "occurred_at": notification.occurred_at.astimezone(UTC).isoformat(),
        "key": notification.key,
    }


def _mrkdwn(text: str) -> str:
    # The three characters Slack's mrkdwn requires escaped; anything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(notification: Notification) -> dict[str, Any]:
    """``{"text", "blocks"}`` within Slack's block limits (header 150, field 2000, section 3000 chars,
    10 fields). ``text`` is the fallback that notifications and older clients show."""
    emoji, title = _TITLES[notification.event]
    fields = [("Application", notification.application), ("Revision", notification.revision),
              ("Source commit", notification.source_commit)]
    details = list(notification.details.items())
    room = 10 - len(fields)
    fields += [(k, v) for k, v in details[:room] if len(v) <= 500]
    rest = [(k, v) for k, v in details if (k, v) not in fields]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{title}: {notification.application}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f":{emoji}: {_mrkdwn(notification.summary)}", 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f"*{_mrkdwn(k)}*\n`{_mrkdwn(v)}`", 2000)}
                                       for k, v in fields]},
    ]
    for k, v in rest[:20]:  # long values (an error, a diff) get a section each
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _cut(f"*{_mrkdwn(k)}*\n```{_mrkdwn(v)}```", 3000)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(
        f"{notification.event.value} · {notification.occurred_at.astimezone(UTC).isoformat()}")}]})
    return {"text": _cut(f"{title}: {notification.summary}", 3000), "blocks": blocks}


_PAYLOADS: dict[Format, Callable[[Notification], dict[str, Any]]] = {
    Format.SLACK: slack_payload, Format.JSON: json_payload}


# ---------------------------------------------------------------------------------------------------
# The notifier


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - _now()).total_seconds())


class Notifier:
    """Sends notifications to webhooks, each at most once per notification key.

    ``secrets`` are replaced by ``***`` in every string of every payload (the webhook URLs' paths are
    added to them). ``timeout`` is (connect, read) seconds per request; ``max_attempts`` bounds the
    tries per webhook; backoff is exponential from ``backoff_base`` up to ``backoff_cap`` with
    jitter, or the server's Retry-After up to ``retry_after_cap``.
    """

    def __init__(self, webhooks: Sequence[Webhook], sent_log: SentLog, *, secrets: Collection[str] = (),
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0,
                 retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.webhooks = tuple(webhooks)
        self.sent_log = sent_log
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        url_secrets = {p for w in self.webhooks for p in (w.url, urlsplit(w.url).path) if len(p) > 1}
        self._scrub = _scrubber({*secrets, *url_secrets})
        self._session = requests.Session()
        # Loopback never goes through a proxy, nor gets .netrc credentials from the environment.
        self._local_session = requests.Session()
        self._local_session.trust_env = False

    def __repr__(self) -> str:
        return f"Notifier({', '.join(str(w) for w in self.webhooks) or 'no webhooks'})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, secrets: Collection[str] = (),
                 **options: Any) -> Notifier:
        """From ``COELHO_NOTIFY_WEBHOOKS`` (comma-separated ``format=url``, format slack or json) and
        ``COELHO_NOTIFY_STATE_DIR`` (default ``$DAGSTER_HOME/coelho-notify``). No webhooks configured:
        a notifier that sends nothing. Errors name the variable and show URLs as scheme://host/…."""
        env = os.environ if env is None else env
        webhooks = parse_webhooks(env.get(WEBHOOKS_VAR, ""))
        state_dir = env.get(STATE_DIR_VAR, "").strip()
        if not state_dir and env.get("DAGSTER_HOME", "").strip():
            state_dir = str(Path(env["DAGSTER_HOME"].strip()) / "coelho-notify")
        if not webhooks:
            return cls((), MemorySentLog(), secrets=secrets, **options)
        if not state_dir:
            raise ConfigError(f"{STATE_DIR_VAR} is not set (nor DAGSTER_HOME): {WEBHOOKS_VAR} needs a directory "
                              "to remember what was sent, or every rerun would notify again")
        try:
            sent_log = FileSentLog(state_dir)
        except OSError as e:
            raise ConfigError(f"{STATE_DIR_VAR}={state_dir!r} is not a usable directory: {e.strerror}") from None
        return cls(webhooks, sent_log, secrets=secrets, **options)

    def send(self, notification: Notification) -> list[SendResult]:
        """One result per webhook, never raises for a webhook's sake (see ``raise_on_failure``)."""
        results = []
        for webhook in self.webhooks:
            try:
                result = self._send_one(webhook, notification)
            except Exception as e:  # noqa: BLE001 - a notification must never fail what it reports on
                result = self._failed(webhook, notification, 0, None,
                                      f"unexpected {type(e).__name__} while sending", transient=False)
            results.append(result)
        return results

    # -- one webhook --------------------------------------------------------------------------------

    def _send_one(self, webhook: Webhook, notification: Notification) -> SendResult:
        key = self._scrub(notification.key)
        record_key = f"{notification.key}@{webhook.id}"
        try:
            if self.sent_log.seen(record_key):
                return self._duplicate(webhook, key)
            with self.sent_log.exclusive(record_key):
                if self.sent_log.seen(record_key):  # another sender finished while we waited
                    return self._duplicate(webhook, key)
                result = self._post(webhook, notification)
                if result.outcome is Outcome.SENT:
                    try:
                        self.sent_log.record(record_key)
                    except OSError as e:
                        log.warning("notification %s sent to %s but not recorded (%s): a rerun may send it again",
                                    key, webhook, e.strerror)
                return result
        except NotifyError as e:
            return self._failed(webhook, notification, 0, None, self._scrub(str(e)), transient=e.transient)
        except OSError as e:
            return self._failed(webhook, notification, 0, None,
                                f"sent-log unusable ({e.strerror or type(e).__name__}); not sent, so that "
                                "a rerun does not send it twice", transient=True)

    def _post(self, webhook: Webhook, notification: Notification) -> SendResult:
        payload = _scrub_all(_PAYLOADS[webhook.format](notification), self._scrub)
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "coelho-pipeline-notify/1",
                   # Header values are latin-1 on the wire: percent-encode what is not plain ASCII.
                   "Idempotency-Key": quote(self._scrub(notification.key), safe=":@._-*")}
        session = self._local_session if is_loopback(urlsplit(webhook.url).hostname) else self._session
        status: int | None = None
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                # No redirects: a 3xx would carry the payload (and a POST turned GET) somewhere unvetted.
                with session.post(webhook.url, data=body, headers=headers, timeout=self.timeout,
                                  allow_redirects=False, stream=True) as response:
                    status = response.status_code
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except requests.Timeout as e:
                status = None
                phase = "connect" if isinstance(e, requests.ConnectTimeout) else "read"
                limit = self.timeout[0] if phase == "connect" else self.timeout[1]
                reason = f"no answer ({phase} timeout after {limit:g}s)"
            except requests.ConnectionError as e:
                status = None
                reason = f"connection failed ({_cause_name(e)})"
            except requests.RequestException as e:  # the exception's text has the URL: only its type is shown
                return self._failed(webhook, notification, attempt, None,
                                    f"request refused by the HTTP client ({type(e).__name__})", transient=False)
            else:
                if 200 <= status < 300:
                    log.info("notification %s (%s) sent to %s (HTTP %d, attempt %d)",
                             self._scrub(notification.key), notification.event.value, webhook, status, attempt)
                    return SendResult(str(webhook), Outcome.SENT, self._scrub(notification.key), attempt, status)
                reason = f"HTTP {status}"
                if 300 <= status < 400:
                    return self._failed(webhook, notification, attempt, status,
                                        f"{reason}: redirects are not followed", transient=False)
                if not http_status_is_transient(status):
                    return self._failed(webhook, notification, attempt, status,
                                        f"{reason}: refused, not retried", transient=False)
            if attempt == self.max_attempts:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("notification %s to %s: %s (attempt %d of %d), retrying in %.1fs",
                        self._scrub(notification.key), webhook, reason, attempt, self.max_attempts, delay)
            time.sleep(delay)
        return self._failed(webhook, notification, self.max_attempts, status,
                            f"{reason} after {self.max_attempts} attempts", transient=True)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        # Full jitter over the upper half: senders that failed together do not retry together.
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _duplicate(self, webhook: Webhook, key: str) -> SendResult:
        log.info("notification %s already sent to %s: not sent again", key, webhook)
        return SendResult(str(webhook), Outcome.DUPLICATE, key, reason="already sent")

    def _failed(self, webhook: Webhook, notification: Notification, attempts: int, status: int | None,
                reason: str, *, transient: bool) -> SendResult:
        key = self._scrub(notification.key)
        log.warning("notification %s (%s) NOT sent to %s: %s", key, notification.event.value, webhook, reason)
        return SendResult(str(webhook), Outcome.FAILED, key, attempts, status, reason, transient)


def _cause_name(error: BaseException) -> str:
    """The innermost cause's type (ConnectionRefusedError, NameResolutionError…): its text has the URL."""
    seen: BaseException = error
    for _ in range(8):
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if nxt is None:
            break
        seen = nxt
    return type(seen).__name__


def parse_webhooks(value: str) -> list[Webhook]:
    """``slack=https://…,json=http://127.0.0.1:9000/hook``; a ConfigError naming COELHO_NOTIFY_WEBHOOKS
    and the item's position, never echoing a URL's path."""
    webhooks: list[Webhook] = []
    ids: dict[str, int] = {}
    items = [item.strip() for item in value.split(",")]
    for position, item in enumerate(items, 1):
        if not item:
            continue
        fmt, sep, url = item.partition("=")
        fmt = fmt.strip().lower()
        if not sep or fmt not in (f.value for f in Format):
            # fmt may be a URL fragment (an item with no "format="): shown only if it looks like a word.
            shown = f" (format {fmt!r})" if fmt.isalnum() and len(fmt) <= 20 else ""
            raise ConfigError(f"{WEBHOOKS_VAR} item {position}{shown} is not format=url with format slack or json, "
                              "e.g. slack=https://hooks.example/…")
        try:
            webhook = Webhook(Format(fmt), url.strip())
        except ValueError as e:
            raise ConfigError(f"{WEBHOOKS_VAR} item {position}: {e}") from None
        if webhook.id in ids:
            raise ConfigError(f"{WEBHOOKS_VAR} item {position} repeats item {ids[webhook.id]} ({webhook})")
        ids[webhook.id] = position
        webhooks.append(webhook)
    return webhooks
