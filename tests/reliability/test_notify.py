"""Notifications against a real HTTP server on 127.0.0.1: exactly once, retried, bounded, no secret.

The server (http.server in a thread) records every request and answers from a per-path script of
statuses. Log records are captured with a handler of our own at DEBUG on the root logger (urllib3's
request lines included), so the leak checks hold with or without pytest's logging plugin.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from coelho_pipeline.config import ConfigError
from coelho_pipeline.notify import (
    Event,
    FileSentLog,
    Format,
    MemorySentLog,
    Notification,
    Notifier,
    NotifyError,
    Outcome,
    Webhook,
    raise_on_failure,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "XtokenQ7f3kz9PathSecret"  # the webhook URL's path token: must show up nowhere but the request line
SECRET = "s3cr3t-registry-password"
SOURCE = "a" * 40
REVISION = "b" * 40
APP = "coelho-realtime"
FAST = {"timeout": (1.0, 1.0), "backoff_base": 0.05, "backoff_cap": 0.2, "retry_after_cap": 0.3}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict
    at: float


@dataclass
class HookServer:
    """Answers each path from its script (a list of (status, headers)), then 200; ``hang`` paths never answer."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def server() -> Iterator[HookServer]:
    state = HookServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with state.lock:
                state.requests.append(Received(self.path, dict(self.headers), json.loads(raw), time.monotonic()))
                script = state.scripts.get(self.path)
                status, headers = script.pop(0) if script else (200, {})
            if self.path in state.hang:
                state.release.wait(30)  # accepted and read, never answered
                return
            if state.delay:
                time.sleep(state.delay)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep stderr quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in self.records)


@pytest.fixture
def logs() -> Iterator[_Records]:
    handler = _Records()
    root = logging.getLogger()
    saved = root.level
    noisy = [logging.getLogger(n) for n in ("urllib3", "urllib3.connectionpool", "coelho_pipeline.notify")]
    saved_noisy = [n.level for n in noisy]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for n in noisy:
        n.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        for n, level in zip(noisy, saved_noisy, strict=True):
            n.setLevel(level)


def hook_path(name: str) -> str:
    return f"/services/T0/{name}/{TOKEN}"


def notifier(server: HookServer, state_dir: Path, *paths: tuple[str, str], **options: object) -> Notifier:
    webhooks = [Webhook(Format(fmt), server.url(path)) for fmt, path in paths]
    return Notifier(webhooks, FileSentLog(state_dir), secrets=[SECRET], **{**FAST, **options})


def every_event() -> list[Notification]:
    since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        Notification.delivered(application=APP, revision=REVISION, source_commit=SOURCE,
                               details={"images": "fastapi:" + SOURCE}),
        Notification.delivery_failed(application=APP, source_commit=SOURCE, step="helm_values",
                                     error="chart does not render: values.yaml line 3"),
        Notification.rolled_back(application=APP, revision=REVISION, to_commit=SOURCE, from_commit="c" * 40),
        Notification.hold_set(application=APP, revision=REVISION, source_commit=SOURCE,
                              reason="rollback after Degraded", since=since),
        Notification.hold_released(application=APP, revision=REVISION, source_commit="d" * 40, since=since),
        Notification.drift_found(application=APP, revision=REVISION,
                                 differences=["fastapi: live image x, Git y", "health: Degraded"]),
    ]


def assert_no_token(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text), f"webhook token leaked into: {text!r}"


# ---------------------------------------------------------------------------------------------------


def test_every_event_received_once_in_each_format(server: HookServer, tmp_path: Path, logs: _Records) -> None:
    n = notifier(server, tmp_path, ("slack", hook_path("slack")), ("json", hook_path("json")))
    events = every_event()
    assert {e.event for e in events} == set(Event)
    for notification in events:
        results = n.send(notification)
        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT], results
        assert all(r.status == 200 and r.attempts == 1 for r in results)

    slack, plain = server.on(hook_path("slack")), server.on(hook_path("json"))
    assert len(slack) == len(plain) == len(events)
    for notification, s, j in zip(events, slack, plain, strict=True):
        assert j.body == {
            "event": notification.event.value, "application": APP, "revision": notification.revision,
            "source_commit": notification.source_commit, "summary": notification.summary,
            "details": dict(notification.details), "occurred_at": notification.occurred_at.isoformat(),
            "key": notification.key,
        }
        assert j.headers["Content-Type"].startswith("application/json")
        assert set(s.body) == {"text", "blocks"}
        assert notification.summary.split(":")[0] in s.body["text"]
        assert s.body["blocks"][0]["type"] == "header" and APP in s.body["blocks"][0]["text"]["text"]
        slack_text = json.dumps(s.body)
        for value in (notification.revision, notification.source_commit, *notification.details.values()):
            assert value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in slack_text
        assert all(len(f["text"]) <= 2000 for b in s.body["blocks"] for f in b.get("fields", []))
    failed = next(r for r in plain if r.body["event"] == "delivery_failed")
    assert failed.body["details"]["step"] == "helm_values" and "line 3" in failed.body["details"]["error"]
    assert_no_token(logs.text())


def test_same_event_and_revision_is_a_duplicate(server: HookServer, tmp_path: Path) -> None:
    n = notifier(server, tmp_path, ("json", hook_path("json")))
    first = Notification.delivered(application=APP, revision=REVISION, source_commit=SOURCE)
    assert n.send(first)[0].outcome is Outcome.SENT
    # A rerun builds the notification again (another occurred_at, other details): same key, not re-sent.
    again = Notification.delivered(application=APP, revision=REVISION, source_commit=SOURCE, details={"run": "2"})
    assert n.send(again)[0].outcome is Outcome.DUPLICATE
    # Another instance on the same state directory (a later sensor tick, another process's run).
    other = notifier(server, tmp_path, ("json", hook_path("json")))
    assert other.send(again)[0].outcome is Outcome.DUPLICATE
    assert len(server.on(hook_path("json"))) == 1
    # Another revision, or another event at this revision, is news.
    assert n.send(Notification.delivered(application=APP, revision="e" * 40, source_commit=SOURCE))[0].ok
    assert n.send(Notification.rolled_back(application=APP, revision=REVISION, to_commit=SOURCE,
                                           from_commit="c" * 40))[0].outcome is Outcome.SENT
    assert len(server.on(hook_path("json"))) == 3


def test_a_new_webhook_gets_what_the_others_already_had(server: HookServer, tmp_path: Path) -> None:
    notification = every_event()[0]
    assert notifier(server, tmp_path, ("json", hook_path("one"))).send(notification)[0].ok
    results = notifier(server, tmp_path, ("json", hook_path("one")), ("slack", hook_path("two"))).send(notification)
    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.SENT]
    assert len(server.on(hook_path("one"))) == len(server.on(hook_path("two"))) == 1


_CHILD = textwrap.dedent("""
    import json, sys
    from coelho_pipeline.notify import FileSentLog, Format, Notification, Notifier, Webhook
    url, state = sys.argv[1], sys.argv[2]
    n = Notifier([Webhook(Format.JSON, url)], FileSentLog(state), timeout=(2, 10))
    [r] = n.send(Notification.delivered(application="coelho-realtime", revision="b" * 40, source_commit="a" * 40))
    print(json.dumps({"outcome": r.outcome.value, "reason": r.reason}))
""")


def _child(url: str, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, url, str(state)], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_exactly_once_across_processes_sending_at_the_same_time(server: HookServer, tmp_path: Path) -> None:
    server.delay = 1.0  # both children are inside their send when the first answer comes
    url = server.url(hook_path("json"))
    children = [_child(url, tmp_path), _child(url, tmp_path)]
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1])["outcome"])
    assert sorted(outcomes) == ["duplicate", "sent"]
    assert len(server.on(hook_path("json"))) == 1
    # And a third process later, and this one: the same notification is already sent.
    out, err = _child(url, tmp_path).communicate(timeout=120)
    assert json.loads(out.strip().splitlines()[-1])["outcome"] == "duplicate", err
    n = Notifier([Webhook(Format.JSON, url)], FileSentLog(tmp_path))
    assert n.send(every_event()[0])[0].outcome is Outcome.DUPLICATE
    assert len(server.on(hook_path("json"))) == 1
    assert TOKEN not in (tmp_path / "sent.jsonl").read_text()


def test_503_then_200_is_retried_and_delivered_once(server: HookServer, tmp_path: Path, logs: _Records) -> None:
    path = hook_path("flaky")
    server.scripts[path] = [(503, {}), (502, {})]
    n = notifier(server, tmp_path, ("slack", path))
    [result] = n.send(every_event()[0])
    assert (result.outcome, result.attempts, result.status) == (Outcome.SENT, 3, 200)
    assert len(server.on(path)) == 3
    assert n.send(every_event()[0])[0].outcome is Outcome.DUPLICATE
    assert len(server.on(path)) == 3
    assert "HTTP 503" in logs.text()
    assert_no_token(logs.text(), result)


def test_429_honours_retry_after_up_to_the_cap(server: HookServer, tmp_path: Path) -> None:
    path = hook_path("limited")
    server.scripts[path] = [(429, {"Retry-After": "3600"})]
    [result] = notifier(server, tmp_path, ("json", path)).send(every_event()[0])
    assert result.outcome is Outcome.SENT and result.attempts == 2
    first, second = server.on(path)
    assert FAST["retry_after_cap"] - 0.05 <= second.at - first.at < 2.0


def test_400_fails_is_not_retried_nor_recorded(server: HookServer, tmp_path: Path, logs: _Records) -> None:
    path = hook_path("bad")
    server.scripts[path] = [(400, {})]
    n = notifier(server, tmp_path, ("json", path), ("json", hook_path("good")))
    results = n.send(every_event()[0])
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.SENT]
    bad = results[0]
    assert (bad.status, bad.attempts, bad.transient) == (400, 1, False) and "HTTP 400" in bad.reason
    assert len(server.on(path)) == 1
    with pytest.raises(NotifyError) as raised:
        raise_on_failure(results)
    assert raised.value.transient is False
    # Not recorded: the next send tries again (and the server now accepts), the good one is a duplicate.
    again = n.send(every_event()[0])
    assert [r.outcome for r in again] == [Outcome.SENT, Outcome.DUPLICATE]
    assert len(server.on(path)) == 2
    assert_no_token(logs.text(), results, again, raised.value, repr(raised.value), raised.value.__cause__)


def test_redirect_is_not_followed(server: HookServer, tmp_path: Path) -> None:
    path = hook_path("moved")
    server.scripts[path] = [(307, {"Location": server.url("/elsewhere")})]
    [result] = notifier(server, tmp_path, ("json", path)).send(every_event()[0])
    assert result.outcome is Outcome.FAILED and result.status == 307 and not result.transient
    assert server.on("/elsewhere") == []


def test_hung_server_is_bounded_by_the_timeout(server: HookServer, tmp_path: Path, logs: _Records) -> None:
    path = hook_path("hung")
    server.hang.add(path)
    n = notifier(server, tmp_path, ("slack", path), timeout=(1.0, 0.5), max_attempts=3)
    started = time.monotonic()
    [result] = n.send(every_event()[0])
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILED and result.transient and result.attempts == 3
    assert "read timeout after 0.5s" in result.reason
    assert len(server.on(path)) == 3
    assert 1.5 <= elapsed < 1.5 + 2 * FAST["backoff_cap"] + 2.0
    with pytest.raises(NotifyError) as raised:
        raise_on_failure([result])
    assert raised.value.transient is True
    # Not recorded as sent: a later tick tries again.
    server.hang.clear()
    assert n.send(every_event()[0])[0].outcome is Outcome.SENT
    assert_no_token(logs.text(), result, raised.value)


def test_unreachable_webhook_is_transient_and_never_raises(tmp_path: Path, logs: _Records) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = Notifier([Webhook(Format.JSON, f"http://127.0.0.1:{port}{hook_path('gone')}")], FileSentLog(tmp_path),
                 **FAST)
    [result] = n.send(every_event()[0])
    assert result.outcome is Outcome.FAILED and result.transient and result.attempts == 4
    assert "connection failed" in result.reason
    assert_no_token(logs.text(), result, repr(n), n.webhooks)


def test_secrets_are_scrubbed_from_every_payload(server: HookServer, tmp_path: Path) -> None:
    n = notifier(server, tmp_path, ("slack", hook_path("slack")), ("json", hook_path("json")))
    failed = Notification.delivery_failed(
        application=APP, source_commit=SOURCE, step="image/fastapi",
        error=f"push refused: password={SECRET} for https://user:{SECRET}@registry.example/ and "
              f"webhook {server.url(hook_path('json'))}",
        details={f"key {SECRET}": f"value {SECRET}", "application": "café ü"})
    assert all(r.ok for r in n.send(failed))
    for received in server.requests:
        raw = json.dumps(received.body)
        assert SECRET not in raw and TOKEN not in raw
        assert "***" in raw
    assert "push refused" in server.on(hook_path("json"))[0].body["details"]["error"]


def test_from_env_parses_and_refuses_without_echoing_the_path(server: HookServer, tmp_path: Path) -> None:
    env = {"COELHO_NOTIFY_WEBHOOKS": f" slack={server.url(hook_path('s'))} , json={server.url('/hook')},",
           "COELHO_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    n = Notifier.from_env(env, **FAST)
    assert [w.format for w in n.webhooks] == [Format.SLACK, Format.JSON]
    assert [r.outcome for r in n.send(every_event()[0])] == [Outcome.SENT, Outcome.SENT]
    assert (tmp_path / "state" / "sent.jsonl").exists()
    assert_no_token(repr(n), n.webhooks, [str(w) for w in n.webhooks])

    assert Notifier.from_env({}).webhooks == ()  # nothing configured: sends nothing, never fails
    bad = {
        f"slack=http://hooks.example/T/B/{TOKEN}": "plain http:// to a non-loopback host",
        f"teams=https://hooks.example/T/B/{TOKEN}": "format 'teams'",
        f"https://hooks.example/T/B/{TOKEN}?x=1": "not format=url",
        f"json=ftp://hooks.example/{TOKEN}": "must be https://",
        f"json=https://h.example/{TOKEN},json=https://h.example/{TOKEN}": "repeats item 1",
    }
    for value, expected in bad.items():
        with pytest.raises(ConfigError) as raised:
            Notifier.from_env({"COELHO_NOTIFY_WEBHOOKS": value, "COELHO_NOTIFY_STATE_DIR": str(tmp_path)})
        message = str(raised.value)
        assert "COELHO_NOTIFY_WEBHOOKS" in message and expected in message, message
        assert_no_token(message, raised.value.__cause__, raised.value.__context__)
    with pytest.raises(ConfigError, match="COELHO_NOTIFY_STATE_DIR"):
        Notifier.from_env({"COELHO_NOTIFY_WEBHOOKS": "json=https://h.example/x"})
    default = Notifier.from_env({"COELHO_NOTIFY_WEBHOOKS": "json=https://h.example/x",
                                 "DAGSTER_HOME": str(tmp_path / "home")})
    assert isinstance(default.sent_log, FileSentLog)
    assert default.sent_log.directory == tmp_path / "home" / "coelho-notify"


def test_memory_log_and_notification_guards() -> None:
    log = MemorySentLog()
    assert not log.seen("k")
    log.record("k")
    assert log.seen("k")
    with pytest.raises(ValueError, match="key"):
        Notification(Event.DELIVERED, " ", "s", {}, REVISION, SOURCE, APP)
    details = {"a": "1"}
    n = Notification(Event.DELIVERED, "k", "s", details, REVISION, SOURCE, APP)
    details["a"] = "2"
    assert n.details["a"] == "1" and hash(n) == hash(Notification(Event.DELIVERED, "k", "x", {}, "r", "s", "a"))
    a = Notification.drift_found(application=APP, revision=REVISION, differences=["x", "y"])
    b = Notification.drift_found(application=APP, revision=REVISION, differences=["y", "x"])
    c = Notification.drift_found(application=APP, revision=REVISION, differences=["x"])
    assert a.key == b.key != c.key


def test_non_ascii_application_name_is_sent(server: HookServer, tmp_path: Path) -> None:
    n = notifier(server, tmp_path, ("json", hook_path("json")))
    notification = Notification.delivered(application="coelho-café", revision=REVISION, source_commit=SOURCE)
    assert n.send(notification)[0].outcome is Outcome.SENT
    [received] = server.on(hook_path("json"))
    assert received.body["application"] == "coelho-café"
    assert received.headers["Idempotency-Key"].isascii()
