"""`coelho webhook`: push events from GitLab and GitHub start the delivery at once.

Fast tests drive the receiver over real HTTP on 127.0.0.1 with a fake trigger (no Dagster), the
Dagster trigger against a scripted GraphQL client, and the GraphQL documents against the installed
dagster_graphql schema. The daemon test runs the receiver as a subprocess against `dagster dev`
(webserver + daemon) with the sensor polling every 30 s, so only the webhook can be that fast.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from dagster._core.scheduler.instigation import InstigatorTick, TickStatus

from coelho_pipeline import cli, webhook
from coelho_pipeline.dev import services
from coelho_pipeline.webhook import DagsterTrigger, Outcome, Push, WebhookError, WebhookServer

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-" + "x" * 24
SHA = "0123456789abcdef0123456789abcdef01234567"


def gitlab_push(ref: str = "refs/heads/master", after: str = SHA) -> dict[str, Any]:
    return {"object_kind": "push", "event_name": "push", "before": "1" * 40, "after": after, "ref": ref,
            "checkout_sha": after, "project": {"path_with_namespace": "coelho/coelho-realtime"}, "commits": []}


def github_push(ref: str = "refs/heads/master", after: str = SHA) -> dict[str, Any]:
    return {"ref": ref, "before": "1" * 40, "after": after, "created": False, "deleted": after == "0" * 40,
            "repository": {"full_name": "coelho/coelho-realtime"}, "commits": []}


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class FakeTrigger:
    delay: float = 0.0
    error: Exception | None = None
    gate: threading.Event | None = None  # when set, every evaluation waits for it
    pushes: list[Push] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, push: Push) -> Outcome:
        with self.lock:
            self.pushes.append(push)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                assert self.gate.wait(30)
            time.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return Outcome("launched", runs=(f"run-{len(self.pushes)}",))
        finally:
            with self.lock:
                self.running -= 1


@dataclass
class Receiver:
    url: str
    trigger: FakeTrigger
    logs: list[str]

    def post(self, body: bytes | dict, headers: Mapping[str, str]) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url, data=data, headers={"Content-Type": "application/json", **headers}, timeout=10)

    def gitlab(self, body: bytes | dict, token: str | None = SECRET, event: str = "Push Hook") -> requests.Response:
        headers = {"X-Gitlab-Event": event, **({"X-Gitlab-Token": token} if token is not None else {})}
        return self.post(body, headers)

    def github(self, body: bytes | dict, event: str = "push", sign: bytes | None = None,
               secret: str = SECRET) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": signature(data if sign is None else sign, secret)}
        return self.post(data, headers)


def start_receiver(trigger: FakeTrigger, **options: Any) -> tuple[WebhookServer, Receiver]:
    logs: list[str] = []
    server = WebhookServer(("127.0.0.1", 0), secret=SECRET, trigger=trigger, log=logs.append, **options)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", trigger, logs)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server, rx = start_receiver(FakeTrigger())
    yield rx
    server.shutdown()
    server.close()
    assert not any(SECRET in line for line in rx.logs), "the secret is in a log line"


# --- verification and parsing -------------------------------------------------------------------------

def test_gitlab_push_with_the_right_token_triggers(receiver: Receiver) -> None:
    answer = receiver.gitlab(gitlab_push())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outcome": "launched", "runs": ["run-1"]}
    assert receiver.trigger.pushes == [Push("gitlab", "refs/heads/master", SHA)]
    assert re.fullmatch(rf"gitlab Push Hook ref=refs/heads/master after={SHA} -> launched run-1 in \d+\.\d\ds",
                        receiver.logs[-1]), receiver.logs


@pytest.mark.parametrize("token", ["wrong", SECRET + "x", SECRET[:-1], "", None])
def test_gitlab_wrong_or_missing_token_is_401_and_nothing_happens(receiver: Receiver, token: str | None) -> None:
    answer = receiver.gitlab(gitlab_push(), token=token)
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthorized"}
    assert receiver.trigger.pushes == []
    assert "401" in receiver.logs[-1] and SECRET not in answer.text


def test_a_request_that_is_neither_gitlab_nor_github_is_401(receiver: Receiver) -> None:
    answer = receiver.post(gitlab_push(), {})
    assert answer.status_code == 401
    assert receiver.trigger.pushes == []


def test_github_push_with_the_right_signature_triggers(receiver: Receiver) -> None:
    answer = receiver.github(github_push())
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "launched"
    assert receiver.trigger.pushes == [Push("github", "refs/heads/master", SHA)]


def test_github_wrong_signature_and_tampered_body_are_401(receiver: Receiver) -> None:
    body = json.dumps(github_push()).encode()
    assert receiver.github(body, secret="another secret").status_code == 401
    tampered = body.replace(SHA.encode(), b"f" * 40)
    assert receiver.github(tampered, sign=body).status_code == 401  # signed the original, sent another
    missing = receiver.post(body, {"X-GitHub-Event": "push"})
    assert missing.status_code == 401
    bare_hex = receiver.post(body, {"X-GitHub-Event": "push",
                                    "X-Hub-Signature-256": signature(body).removeprefix("sha256=")})
    assert bare_hex.status_code == 401
    assert receiver.trigger.pushes == []


def test_github_ping_is_answered_once_signed(receiver: Receiver) -> None:
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1}
    answer = receiver.github(ping, event="ping")
    assert answer.status_code == 200 and answer.json() == {"outcome": "pong"}
    assert receiver.github(ping, event="ping", secret="wrong").status_code == 401
    assert receiver.trigger.pushes == []


@pytest.mark.parametrize("body, event, detail", [
    (gitlab_push(ref="refs/heads/feature"), "Push Hook", "not refs/heads/master"),
    (gitlab_push(ref="refs/tags/v1.0"), "Push Hook", "not refs/heads/master"),
    (gitlab_push(ref="refs/heads/master-old"), "Push Hook", "not refs/heads/master"),
    (gitlab_push(after="0" * 40), "Push Hook", "the branch was deleted"),
    ({"object_kind": "tag_push", "ref": "refs/tags/v1.0"}, "Tag Push Hook", "not a push event"),
    ({"object_kind": "merge_request"}, "Merge Request Hook", "not a push event"),
])
def test_other_refs_and_events_are_ignored(receiver: Receiver, body: dict, event: str, detail: str) -> None:
    answer = receiver.gitlab(body, event=event)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outcome": "ignored", "detail": detail}
    assert receiver.trigger.pushes == []


def test_github_push_to_another_branch_is_ignored(receiver: Receiver) -> None:
    answer = receiver.github(github_push(ref="refs/heads/feature"))
    assert answer.json()["outcome"] == "ignored"
    assert receiver.github({"action": "opened"}, event="issues").json()["outcome"] == "ignored"
    assert receiver.trigger.pushes == []


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[1, 2]", b'{"after": "x"}', b'{"ref": 7}', b""])
def test_a_body_that_is_not_json_or_has_no_ref_is_400(receiver: Receiver, body: bytes) -> None:
    assert receiver.gitlab(body).status_code == 400
    assert receiver.github(body).status_code == 400
    assert receiver.trigger.pushes == []


def test_a_wrong_token_is_401_even_with_a_broken_body(receiver: Receiver) -> None:
    assert receiver.gitlab(b"not json", token="wrong").status_code == 401


def test_the_branch_filter_follows_the_configured_branch() -> None:
    server, rx = start_receiver(FakeTrigger(), branch="release/2.x")
    try:
        assert rx.gitlab(gitlab_push()).json()["outcome"] == "ignored"
        assert rx.gitlab(gitlab_push(ref="refs/heads/release/2.x")).json()["outcome"] == "launched"
    finally:
        server.shutdown()
        server.close()


def test_a_body_over_the_limit_is_413_without_being_read() -> None:
    server, rx = start_receiver(FakeTrigger(), max_body=1024)
    try:
        answer = rx.gitlab({**gitlab_push(), "padding": "x" * 2000})
        assert answer.status_code == 413
        assert rx.trigger.pushes == []
    finally:
        server.shutdown()
        server.close()


def test_dagster_unusable_is_502_with_the_message_and_no_secret() -> None:
    error = WebhookError("cannot reach the Dagster webserver at http://127.0.0.1:9 (ConnectionError)")
    server, rx = start_receiver(FakeTrigger(error=error))
    try:
        answer = rx.gitlab(gitlab_push())
        assert answer.status_code == 502
        assert answer.json() == {"outcome": "error", "error": str(error)}
        assert SECRET not in answer.text and not any(SECRET in line for line in rx.logs)
        # An unexpected exception is a 502 too, and the worker thread lives on.
        rx.trigger.error = RuntimeError("boom")
        assert rx.gitlab(gitlab_push()).status_code == 502
        rx.trigger.error = None
        assert rx.gitlab(gitlab_push()).status_code == 200
    finally:
        server.shutdown()
        server.close()


def test_a_slow_evaluation_is_answered_202_and_logged_when_it_ends() -> None:
    server, rx = start_receiver(FakeTrigger(delay=1.0), answer_wait=0.2)
    try:
        answer = rx.gitlab(gitlab_push())
        assert answer.status_code == 202 and answer.json()["outcome"] == "accepted"
        deadline = time.monotonic() + 5
        while not any("later: launched run-1" in line for line in rx.logs):
            assert time.monotonic() < deadline, rx.logs
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.close()


def _wait_until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_burst_of_pushes_is_serialized_and_coalesced() -> None:
    gate = threading.Event()
    server, rx = start_receiver(FakeTrigger(gate=gate))
    try:
        with ThreadPoolExecutor(20) as pool:
            first = pool.submit(rx.gitlab, gitlab_push(after=f"{100:040x}"))
            _wait_until(lambda: rx.trigger.running == 1)  # the first evaluation is under way
            rest = [pool.submit(rx.gitlab, gitlab_push(after=f"{i:040x}")) for i in range(1, 20)]
            _wait_until(lambda: server.serial.waiting == 19)
            gate.set()
            answers = [first.result(), *(f.result() for f in rest)]
        assert [a.status_code for a in answers] == [200] * 20
        # One evaluation for the first event, one more shared by the 19 that came during it.
        assert len(rx.trigger.pushes) == 2 and rx.trigger.pushes[0].after == f"{100:040x}"
        assert rx.trigger.pushes[1].after in {f"{i:040x}" for i in range(1, 20)}  # the newest of them
        assert answers[0].json()["runs"] == ["run-1"]
        assert {a.json()["runs"][0] for a in answers[1:]} == {"run-2"}
        assert rx.trigger.max_running == 1 and server.serial.evaluations == 2
        assert len([line for line in rx.logs if "-> launched" in line]) == 20  # one line per event
    finally:
        server.shutdown()
        server.close()


def test_evaluations_never_overlap() -> None:
    server, rx = start_receiver(FakeTrigger(delay=0.05))
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: rx.gitlab(gitlab_push()), range(40)))
        assert {a.status_code for a in answers} == {200}
        assert rx.trigger.max_running == 1
        assert len(rx.trigger.pushes) < 40
    finally:
        server.shutdown()
        server.close()


def test_only_post_is_served(receiver: Receiver) -> None:
    assert requests.get(receiver.url, timeout=5).status_code == 405
    assert requests.get(receiver.url.replace("/hook", "/healthz"), timeout=5).json() == {"status": "ok"}


def test_listen_addresses() -> None:
    assert webhook.parse_listen("127.0.0.1:3071") == ("127.0.0.1", 3071)
    assert webhook.parse_listen("[::1]:8080") == ("::1", 8080)
    assert webhook.parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    for bad in ("3071", "127.0.0.1", "127.0.0.1:", ":3071", "host:http", "host:0", "host:70000"):
        with pytest.raises(ValueError):
            webhook.parse_listen(bad)


# --- the Dagster trigger, against a scripted GraphQL client -------------------------------------------

class ScriptedClient:
    """Answers the receiver's GraphQL operations by name, and records them."""

    shown_url = "http://127.0.0.1:3070"

    def __init__(self, *, status: str = "RUNNING", cursor: str | None = "c" * 40,
                 run_requests: list[dict] | None = None, existing: Mapping[str, list[str]] | None = None,
                 error: str | None = None, states: list[tuple[bool, str | None]] | None = None) -> None:
        self.status, self.cursor, self.error = status, cursor, error
        # (a daemon tick is under way, the cursor) for each sensor state read in turn; the last one stays.
        self.states = list(states or [(False, cursor)])
        self.run_requests = run_requests if run_requests is not None else [{
            "runKey": SHA, "jobName": "deliver_commit", "runConfigYaml": "{}\n",
            "tags": [{"key": "coelho/source-sha", "value": SHA}, {"key": "coelho/superseded", "value": "0"},
                     {"key": "dagster/partition", "value": SHA}]}]
        self.existing = dict(existing or {})
        self.calls: list[tuple[str, dict]] = []

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        name = text.split("(")[0].split("{")[0].split()[-1]
        variables = dict(variables or {})
        self.calls.append((name, variables))
        if name == "WebhookRepositories":
            return {"repositoriesOrError": {"__typename": "RepositoryConnection", "nodes": [
                {"name": "other", "location": {"name": "x"}, "jobs": [{"name": "deliver_commit"}], "sensors": []},
                {"name": "__repository__", "location": {"name": "coelho"}, "jobs": [{"name": "deliver_commit"}],
                 "sensors": [{"name": "git_push_sensor"}]}]}}
        if name == "WebhookSensorState":
            ticking, cursor = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            tick = {"status": "STARTED" if ticking else "SKIPPED", "timestamp": time.time() - 1}
            return {"sensorOrError": {"__typename": "Sensor", "sensorState": {
                "status": self.status, "typeSpecificData": {"__typename": "SensorData", "lastCursor": cursor},
                "ticks": [tick]}}}
        if name == "WebhookSensorDryRun":
            return {"sensorDryRun": {"__typename": "DryRunInstigationTick", "evaluationResult": {
                "cursor": SHA, "skipReason": None if self.run_requests else "no new commit on master",
                "error": {"message": self.error} if self.error else None, "runRequests": self.run_requests,
                "dynamicPartitionsRequests": [{"type": "ADD_PARTITIONS", "partitionsDefName": "source_commits",
                                               "partitionKeys": [SHA]}] if self.run_requests else []}}}
        if name == "WebhookRuns":
            tags = tuple(sorted((t["key"], t["value"]) for t in variables["filter"]["tags"]))
            origin = {"repositoryLocationName": "coelho", "repositoryName": "__repository__"}
            return {"runsOrError": {"__typename": "Runs", "results": [
                {"runId": r, "status": "STARTED", "repositoryOrigin": origin}
                for r in self.existing.get(json.dumps(tags), [])]}}
        if name == "WebhookAddPartition":
            return {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess",
                                            "partitionKey": variables["partitionKey"]}}
        if name == "Launch":
            return {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "new-run"}}}
        raise AssertionError(f"unexpected operation {name}")


def _key(tags: Mapping[str, str]) -> str:
    return json.dumps(tuple(sorted(tags.items())))


def test_the_trigger_launches_what_the_sensor_requests_tagged_as_the_daemon_would() -> None:
    client = ScriptedClient()
    outcome = DagsterTrigger(client)(Push("gitlab", "refs/heads/master", SHA))  # type: ignore[arg-type]
    assert outcome == Outcome("launched", runs=("new-run",))
    names = [name for name, _ in client.calls]
    # Nothing that sets the cursor; the last look at the sensor's state right before the launch.
    assert names == ["WebhookRepositories", "WebhookSensorState", "WebhookSensorDryRun", "WebhookAddPartition",
                     "WebhookRuns", "WebhookSensorState", "Launch"]
    selector = {"repositoryLocationName": "coelho", "repositoryName": "__repository__"}
    dry_run = client.calls[2][1]
    assert dry_run == {"selector": {**selector, "sensorName": "git_push_sensor"}, "cursor": "c" * 40}
    assert client.calls[3][1] == {"repositorySelector": selector, "partitionsDefName": "source_commits",
                                  "partitionKey": SHA}
    assert client.calls[4][1]["filter"]["tags"] == [{"key": "dagster/run_key", "value": SHA},
                                                    {"key": "dagster/sensor_name", "value": "git_push_sensor"}]
    params = client.calls[6][1]["params"]
    assert params["selector"] == {**selector, "jobName": "deliver_commit"}
    assert params["runConfigData"] == {}
    assert {t["key"]: t["value"] for t in params["executionMetadata"]["tags"]} == {
        "coelho/source-sha": SHA, "coelho/superseded": "0", "dagster/partition": SHA,
        "dagster/run_key": SHA, "dagster/sensor_name": "git_push_sensor", "coelho/trigger": "webhook"}


def test_the_trigger_reports_a_run_the_daemon_launched_first() -> None:
    existing = {_key({"dagster/run_key": SHA, "dagster/sensor_name": "git_push_sensor"}): ["daemon-run"]}
    client = ScriptedClient(existing=existing)
    outcome = DagsterTrigger(client)(Push("gitlab", "refs/heads/master", SHA))  # type: ignore[arg-type]
    assert outcome == Outcome("already requested", runs=("daemon-run",))
    assert "Launch" not in [name for name, _ in client.calls]


def test_the_trigger_waits_for_a_daemon_tick_under_way_then_evaluates_again() -> None:
    sleeps: list[float] = []
    # Ticking at the first look, done at the second: evaluated after the tick, launched.
    client = ScriptedClient(states=[(True, "c" * 40), (False, "c" * 40)])
    outcome = DagsterTrigger(client, sleep=sleeps.append)(  # type: ignore[arg-type]
        Push("gitlab", "refs/heads/master", SHA))
    assert outcome == Outcome("launched", runs=("new-run",))
    assert [n for n, _ in client.calls].count("WebhookSensorDryRun") == 1
    # A tick started between the dry run and the launch, and moved the cursor: evaluated again, with
    # the new cursor; the sensor then requests nothing and the daemon's run is reported.
    existing = {_key({"coelho/source-sha": SHA}): ["daemon-run"]}
    client = ScriptedClient(states=[(False, "c" * 40), (True, "c" * 40), (False, SHA)], existing=existing)
    client_requests = client.run_requests
    trigger = DagsterTrigger(client, sleep=sleeps.append)  # type: ignore[arg-type]

    def dry_run_once(text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        answer = ScriptedClient.query(client, text, variables)
        if "sensorDryRun" in answer:
            client.run_requests = []  # the second evaluation, with the daemon's cursor, requests nothing
        return answer

    client.query = dry_run_once  # type: ignore[method-assign]
    outcome = trigger(Push("gitlab", "refs/heads/master", SHA))
    assert client_requests and outcome.outcome == "already requested" and outcome.runs == ("daemon-run",)
    assert "Launch" not in [n for n, _ in client.calls]
    assert [v["cursor"] for n, v in client.calls if n == "WebhookSensorDryRun"] == ["c" * 40, SHA]


def test_the_trigger_leaves_the_push_to_a_daemon_that_keeps_ticking() -> None:
    waited = [0.0]  # fake seconds, advanced by the trigger's sleeps
    client = ScriptedClient(states=[(True, "c" * 40)])
    trigger = DagsterTrigger(client, clock=lambda: time.time() + waited[0],  # type: ignore[arg-type]
                             sleep=lambda seconds: waited.__setitem__(0, waited[0] + seconds))
    outcome = trigger(Push("gitlab", "refs/heads/master", SHA))
    assert outcome.outcome == "left to the daemon"
    assert "WebhookSensorDryRun" not in [n for n, _ in client.calls]
    assert waited[0] <= webhook.EVALUATION_ATTEMPTS * webhook.TICK_WAIT_SECONDS + 1  # bounded


def test_a_started_tick_left_by_a_dead_daemon_does_not_block() -> None:
    client = ScriptedClient(states=[(True, "c" * 40)])
    # The tick's timestamp is a second before the scripted time.time(); the trigger's clock is 10 min on.
    outcome = DagsterTrigger(client, clock=lambda: time.time() + 600)(  # type: ignore[arg-type]
        Push("gitlab", "refs/heads/master", SHA))
    assert outcome.outcome == "launched"


def test_the_trigger_with_nothing_requested_reports_the_run_of_that_commit_or_the_skip_reason() -> None:
    existing = {_key({"coelho/source-sha": SHA}): ["earlier"]}
    outcome = DagsterTrigger(ScriptedClient(run_requests=[], existing=existing))(  # type: ignore[arg-type]
        Push("github", "refs/heads/master", SHA))
    assert outcome == Outcome("already requested", runs=("earlier",), detail="no new commit on master")
    outcome = DagsterTrigger(ScriptedClient(run_requests=[]))(  # type: ignore[arg-type]
        Push("github", "refs/heads/master", SHA))
    assert outcome == Outcome("nothing to deliver", detail="no new commit on master")


def test_the_trigger_respects_a_stopped_sensor_and_reports_a_failing_one() -> None:
    client = ScriptedClient(status="STOPPED")
    outcome = DagsterTrigger(client)(Push("gitlab", "refs/heads/master", SHA))  # type: ignore[arg-type]
    assert outcome.outcome == "ignored" and "stopped" in outcome.detail
    assert "WebhookSensorDryRun" not in [name for name, _ in client.calls]
    with pytest.raises(WebhookError, match="git_push_sensor failed: git ls-remote refused"):
        DagsterTrigger(ScriptedClient(error="git ls-remote refused\nTraceback ..."))(  # type: ignore[arg-type]
            Push("gitlab", "refs/heads/master", SHA))


def test_a_request_without_a_run_key_is_left_to_the_daemon() -> None:
    client = ScriptedClient(run_requests=[{"runKey": None, "jobName": None, "runConfigYaml": "", "tags": []}])
    outcome = DagsterTrigger(client)(Push("gitlab", "refs/heads/master", SHA))  # type: ignore[arg-type]
    assert outcome.outcome == "nothing to deliver"
    assert "Launch" not in [name for name, _ in client.calls]


def test_the_graphql_documents_are_valid_against_the_installed_schema() -> None:
    import graphql
    from dagster_graphql.schema import create_schema

    schema = create_schema().graphql_schema
    for name, document in webhook.GRAPHQL_DOCUMENTS.items():
        assert graphql.validate(schema, graphql.parse(document)) == [], name
    mutations = {f.name.value for d in map(graphql.parse, webhook.GRAPHQL_DOCUMENTS.values())
                 for op in d.definitions for f in op.selection_set.selections}
    assert mutations == {"repositoriesOrError", "sensorOrError", "sensorDryRun", "addDynamicPartition",
                         "runsOrError", "launchRun"}


def test_the_names_match_the_pipeline_and_dagster() -> None:
    from coelho_pipeline.config import Settings
    from pipeline_harness import git_push_sensor

    assert git_push_sensor.name == webhook.SENSOR_NAME == "git_push_sensor"
    assert git_push_sensor.job_name == webhook.JOB_NAME == "deliver_commit"
    assert (webhook.RUN_KEY_TAG, webhook.SENSOR_NAME_TAG, webhook.PARTITION_NAME_TAG) == (
        "dagster/run_key", "dagster/sensor_name", "dagster/partition")
    assert webhook.DEFAULT_BRANCH == Settings(git_url="/x").git_branch == "master"


# --- the command --------------------------------------------------------------------------------------

def test_the_command_refuses_to_start_without_a_secret(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COELHO_WEBHOOK_SECRET", raising=False)
    assert cli.main(["webhook", "--listen", "127.0.0.1:1"]) == 2
    assert "COELHO_WEBHOOK_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("COELHO_WEBHOOK_SECRET", "  ")
    assert cli.main(["webhook"]) == 2


def start_command(port: int, dagster_url: str, log_path: Path, secret: str = SECRET,
                  extra_env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`coelho webhook` as a subprocess; the secret only in its environment."""
    env = {**os.environ, "COELHO_WEBHOOK_SECRET": secret, **(extra_env or {})}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "coelho_pipeline.cli", "webhook", "--listen", f"127.0.0.1:{port}",
             "--url", dagster_url], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    assert secret not in " ".join(process.args)
    try:
        services.wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
                          timeout=60, what="coelho webhook")
    except Exception:
        stop_command(process)
        raise
    return process


def stop_command(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """By its PID; SIGKILL only if it did not stop on its own."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    port = services.free_port()
    log_path = tmp_path / "webhook.log"
    process = start_command(port, "http://127.0.0.1:9", log_path)
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/", data=b"{}", timeout=10,
                               headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"})
        assert answer.status_code == 401
        # Dagster is not there: a verified push is a 502 that names the webserver, not the secret.
        answer = requests.post(f"http://127.0.0.1:{port}/", data=json.dumps(gitlab_push()), timeout=30,
                               headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET})
        assert answer.status_code == 502 and "127.0.0.1:9" in answer.json()["error"], answer.text
    finally:
        code = stop_command(process, sig)
    log = log_path.read_text()
    assert code == 0, log
    assert "listening on http://127.0.0.1:" in log and "stopped" in log
    assert "-> 401" in log and "-> 502" in log
    assert SECRET not in log and SECRET not in answer.text


# --- through `dagster dev` and its daemon -------------------------------------------------------------

@pytest.fixture
def dagster_dev_env() -> dict[str, str]:
    """Polling alone would take up to 30 s: only the webhook can start the delivery within seconds."""
    return {"COELHO_POLL_INTERVAL_SECONDS": "30"}


def _sensor_ticks(instance: dg.DagsterInstance) -> list[InstigatorTick]:
    states = [s for s in instance.all_instigator_state() if s.name == "git_push_sensor"]
    if not states:
        return []
    return list(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=5))


def _wait_for_a_fresh_tick(instance: dg.DagsterInstance, timeout: float = 120) -> InstigatorTick:
    """Waits for a sensor tick that starts and ends from now on, and returns it. Right after it, the
    daemon's next tick is a whole minimum interval away."""
    seen = max((t.tick_id for t in _sensor_ticks(instance)), default=-1)
    return _wait_for_tick_after(instance, seen, timeout)


def _wait_for_tick_after(instance: dg.DagsterInstance, tick_id: int, timeout: float) -> InstigatorTick:
    """The first finished sensor tick after ``tick_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [t for t in _sensor_ticks(instance) if t.tick_id > tick_id and t.status != TickStatus.STARTED]
        if done:
            return min(done, key=lambda t: t.tick_id)
        time.sleep(0.1)
    raise AssertionError(f"no sensor tick after tick {tick_id} within {timeout}s")


def _created_at(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run_id]), limit=1)[0]
    created = record.create_timestamp
    return (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).timestamp()


@pytest.mark.docker
@pytest.mark.daemon
def test_a_push_event_starts_the_delivery_at_once_and_the_daemon_does_not_repeat_it(dagster_dev,
                                                                                    tmp_path: Path) -> None:
    from daemon_harness import sensor_cursor, wait_for_run

    repo, instance, _, dagster_port = dagster_dev
    # The first tick delivers the seed commit; its manifest commit lands on the branch.
    assert wait_for_run(instance, repo.head()).status == dg.DagsterRunStatus.SUCCESS
    port = services.free_port()
    secret = f"webhook-{uuid.uuid4().hex}"
    log_path = tmp_path / "webhook.log"
    process = start_command(port, f"http://127.0.0.1:{dagster_port}", log_path, secret=secret,
                            extra_env={"COELHO_GIT_BRANCH": repo.branch})
    hook = f"http://127.0.0.1:{port}/"
    try:
        fresh = _wait_for_a_fresh_tick(instance)
        last_tick, cursor_before = fresh.tick_id, fresh.cursor
        change = repo.push({"apps/fastapi/main.py": "print('delivered on a webhook')\n"}, "FastAPI: webhook")
        event = json.dumps(gitlab_push(ref=f"refs/heads/{repo.branch}", after=change))

        wrong = requests.post(hook, data=event, timeout=30,
                              headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "not-the-secret"})
        assert wrong.status_code == 401
        assert not instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": change}))

        posted = time.time()
        answer = requests.post(hook, data=event, timeout=30,
                               headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret})
        answered = time.time() - posted
        assert answer.status_code == 200, answer.text
        # Did the daemon tick between the push and the answer? Then it may have been first (only
        # when the sensor's interval is shorter than configured here).
        daemon_ticked = any(t.tick_id > last_tick for t in _sensor_ticks(instance))
        body = answer.json()
        print(f"\nwebhook answer after {answered:.2f}s: {body}; daemon ticked meanwhile: {daemon_ticked}")

        deadline = time.monotonic() + 30
        while not (runs := instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": change}))):
            assert time.monotonic() < deadline, "no run for the pushed commit"
            time.sleep(0.05)
        run = runs[0]
        created = _created_at(instance, run.run_id) - posted
        print(f"POST -> run created: {created:.2f}s")
        if body["outcome"] == "launched" or not daemon_ticked:
            assert body["outcome"] == "launched" and body["runs"] == [run.run_id], body
            assert run.tags["coelho/trigger"] == "webhook"
            assert run.tags["dagster/run_key"] == change and run.tags["dagster/sensor_name"] == "git_push_sensor"
            assert run.tags["dagster/partition"] == change
            assert created < 10, f"the run was created {created:.1f}s after the POST"
        else:
            print("the daemon's tick came first; the run is the sensor's own")
            assert body["outcome"] == "already requested" and run.run_id in body["runs"], body

        finished = wait_for_run(instance, change)
        assert finished.status == dg.DagsterRunStatus.SUCCESS, finished.run_id
        started = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        assert started
        print(f"POST -> RUN_START: {started[0].timestamp - posted:.2f}s")
        # Where the rest goes: the queue (dequeue_interval_seconds) and the run worker's start.
        for kind in (dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_DEQUEUED,
                     dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START):
            for record in instance.all_logs(run.run_id, of_type=kind)[:1]:
                print(f"  POST -> {kind.name}: {record.timestamp - posted:.2f}s")

        # The daemon's next tick evaluates the sensor itself (from the cursor of before the push),
        # finds the run key used by the webhook's run and skips it, and moves the cursor.
        tick = _wait_for_tick_after(instance, last_tick, timeout=90)
        print(f"daemon tick {tick.tick_id} at POST{tick.timestamp - posted:+.1f}s: {tick.status.value} "
              f"runs={list(tick.run_ids)} keys={list(tick.run_keys)} cursor={tick.cursor}")
        deadline = time.monotonic() + 60
        while sensor_cursor(instance) in (cursor_before, None):
            assert time.monotonic() < deadline, "the sensor never moved past the old cursor"
            time.sleep(0.5)
        if body["outcome"] == "launched":
            assert change in tick.run_keys and not tick.run_ids, tick
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"coelho/source-sha": change}))
        assert [r.run_id for r in runs] == [run.run_id]
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name="deliver_commit"))) == 2
    finally:
        code = stop_command(process)
    log = log_path.read_text()
    print(log)
    assert code == 0, log
    assert secret not in log
    assert f"ref=refs/heads/{repo.branch} after={change} -> " in log
