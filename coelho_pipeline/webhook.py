"""``coelho webhook``: a push webhook receiver that makes a push start its delivery at once.

The git_push_sensor polls the branch, and the daemon evaluates it every few seconds at best. This
receiver takes GitLab and GitHub push events and, for a verified push to the watched branch, does
through the Dagster webserver's GraphQL API what the UI's "Test sensor" dialog does: it evaluates
git_push_sensor with its current cursor (``sensorDryRun``), adds the dynamic partitions the sensor
asks for and launches the runs it requests, tagged as the daemon tags them (``dagster/run_key``,
``dagster/sensor_name``) plus ``coelho/trigger=webhook``. It never moves the cursor: the daemon's next
tick evaluates the sensor itself, finds the run key taken by a run of this sensor and skips it, then
moves the cursor and records the sensor's observations as usual. Polling stays the fallback: a
missed or refused event only means the delivery starts at the next tick.

Evaluations run one at a time on one worker thread; events that arrive during one share the next,
so a burst of pushes costs two evaluations, and the sensor delivers only the newest commit anyway.

A daemon tick under way is waited for before a launch (it may be launching the same run key), and
the evaluation is done again after it; if the daemon keeps ticking, the push is left to it.

Answers: 401 (missing or wrong token/signature; nothing else happens), 400 (not JSON, no ref), 413
(body over MAX_BODY_BYTES), 200 with ``{"outcome": ...}`` (ignored, pong, launched, already
requested, nothing to deliver, left to the daemon), 202 when the evaluation outlasts
ANSWER_WAIT_SECONDS (it goes on), 502 when the webserver or the sensor could not be used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TextIO

import yaml
from dagster._core.storage.tags import PARTITION_NAME_TAG, RUN_KEY_TAG, SENSOR_NAME_TAG

from coelho_pipeline.cli import DEFAULT_URL, LAUNCH, URL_ENV, DagsterClient
from coelho_pipeline.config import Settings
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.kube import first_line
from coelho_pipeline.loopback import is_loopback
from coelho_pipeline.sensors import SENSOR_NAME, SOURCE_SHA_TAG
from coelho_pipeline.targets import TargetNames

SECRET_ENV = "COELHO_WEBHOOK_SECRET"
LISTEN_ENV = "COELHO_WEBHOOK_LISTEN"
BRANCH_ENV = "COELHO_GIT_BRANCH"
DEFAULT_LISTEN = "127.0.0.1:3071"
DEFAULT_BRANCH = Settings.git_branch  # the branch the pipeline watches when COELHO_GIT_BRANCH is unset

JOB_NAME = "deliver_commit"  # the single target's delivery job (see targets.Target.name)
TRIGGER_TAG = "coelho/trigger"

# A push event of a few thousand commits stays far below this; anything bigger is not a push.
MAX_BODY_BYTES = 5 * 1024 * 1024
# A client that stalls while sending headers or body loses its connection, not a thread forever.
READ_TIMEOUT_SECONDS = 10.0
# GitLab and GitHub give a webhook about 10 s before they count it failed: answer before that (202)
# and let a slow evaluation (a hung git remote) finish on its own.
ANSWER_WAIT_SECONDS = 8.0
# How long a stop waits for an evaluation under way (it may be launching a run).
STOP_GRACE_SECONDS = 15.0
# A daemon tick under way when the receiver is about to launch: how long to wait for it to end, and
# the age past which a STARTED tick is a leftover (Dagster's sensor evaluation timeout is 60 s).
TICK_WAIT_SECONDS = 10.0
TICK_POLL_SECONDS = 0.2
STALE_TICK_SECONDS = 90.0
EVALUATION_ATTEMPTS = 3
SECRET_MIN_LENGTH = 16
_NULL_SHA = re.compile(r"^0+$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
EXIT_OK, EXIT_ERROR = 0, 2


class WebhookError(PipelineError):
    """The sensor could not be evaluated or its runs launched; the message says why, never a secret."""


@dataclass(frozen=True)
class Push:
    """A verified push event: where it came from, the ref and the commit it moved the ref to."""

    source: str  # "gitlab" or "github"
    ref: str
    after: str


@dataclass(frozen=True)
class Outcome:
    """What an evaluation did; ``body()`` is the JSON answer."""

    outcome: str  # launched, already requested, nothing to deliver, left to the daemon, ignored
    runs: tuple[str, ...] = ()
    detail: str = ""

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"outcome": self.outcome}
        if self.runs:
            body["runs"] = list(self.runs)
        if self.detail:
            body["detail"] = self.detail
        return body

    def describe(self) -> str:
        runs = f" {', '.join(self.runs)}" if self.runs else ""
        return f"{self.outcome}{runs}" + (f" ({self.detail})" if self.detail else "")


class Trigger(Protocol):
    """Starts what a push to the branch should start; raises PipelineError when it cannot."""

    def __call__(self, push: Push) -> Outcome: ...


Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    """One timestamped line on stderr."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    print(f"{stamp} coelho webhook: {line}", file=sys.stderr, flush=True)


def _printable(text: object, limit: int = 120) -> str:
    """Untrusted text for a log line: one line, no control characters, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in str(text))
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


# --- GraphQL, checked against the installed dagster_graphql schema by tests/test_webhook.py ---------

REPOSITORIES = """
query WebhookRepositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } sensors { name } } }
    ... on Error { message }
  }
}
"""

SENSOR_STATE = """
query WebhookSensorState($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        typeSpecificData { __typename ... on SensorData { lastCursor } }
        ticks(limit: 1) { status timestamp }
      }
    }
    ... on Error { message }
  }
}
"""

DRY_RUN = """
mutation WebhookSensorDryRun($selector: SensorSelector!, $cursor: String) {
  sensorDryRun(selectorData: $selector, cursor: $cursor) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        cursor
        skipReason
        error { message }
        runRequests { runKey jobName runConfigYaml tags { key value } }
        dynamicPartitionsRequests { type partitionsDefName partitionKeys }
      }
    }
    ... on Error { message }
  }
}
"""

ADD_PARTITION = """
mutation WebhookAddPartition($repositorySelector: RepositorySelector!, $partitionsDefName: String!,
                             $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector, partitionsDefName: $partitionsDefName,
                      partitionKey: $partitionKey) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on Error { message }
  }
}
"""

RUNS = """
query WebhookRuns($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 20) {
    __typename
    ... on Runs { results { runId status repositoryOrigin { repositoryLocationName repositoryName } } }
    ... on Error { message }
  }
}
"""

GRAPHQL_DOCUMENTS: Mapping[str, str] = {"REPOSITORIES": REPOSITORIES, "SENSOR_STATE": SENSOR_STATE,
                                        "DRY_RUN": DRY_RUN, "ADD_PARTITION": ADD_PARTITION, "RUNS": RUNS,
                                        "LAUNCH": LAUNCH}


@dataclass(frozen=True)
class _SensorState:
    status: str  # RUNNING or STOPPED
    cursor: str | None
    ticking: bool  # the daemon is evaluating the sensor right now


@dataclass(frozen=True)
class _RunRequest:
    run_key: str | None
    job: str
    run_config: Mapping[str, Any]
    tags: Mapping[str, str]


class DagsterTrigger:
    """Evaluates the push sensor through the webserver and launches what it requests, as the daemon would."""

    def __init__(self, client: DagsterClient, *, sensor: str = SENSOR_NAME, job: str = JOB_NAME,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sensor = sensor
        self.job = job
        self._clock = clock
        self._sleep = sleep

    def __call__(self, push: Push) -> Outcome:
        location, repository = self._locate()
        repo_selector = {"repositoryLocationName": location, "repositoryName": repository}
        selector = {**repo_selector, "sensorName": self.sensor}
        for _ in range(EVALUATION_ATTEMPTS):
            state = self._sensor_state(selector)
            if state.status != "RUNNING":
                # A stopped sensor means no automatic deliveries; the webhook must not bring them back.
                return Outcome("ignored", detail=f"{self.sensor} is {state.status.lower()}; start it in the UI "
                               "to deliver pushes")
            if state.ticking:
                self._wait_for_tick(selector)
                continue
            outcome = self._evaluate(push, repo_selector, selector, state)
            if outcome is not None:
                return outcome
            self._wait_for_tick(selector)
        # The daemon kept ticking: it delivers what its ticks see, polling as without the webhook.
        return Outcome("left to the daemon", detail=f"a {self.sensor} tick was under way each time")

    def _evaluate(self, push: Push, repo_selector: Mapping[str, str], selector: Mapping[str, str],
                  state: _SensorState) -> Outcome | None:
        """One evaluation and its launches; None when a daemon tick got in between (evaluate again)."""
        evaluation = self._dry_run(selector, state.cursor)
        requests = [self._run_request(r) for r in evaluation.get("runRequests") or ()]
        if not requests:
            # The dry run drops run keys already used by the sensor's runs: the daemon may have been first.
            skip = evaluation.get("skipReason") or "the sensor requested no run"
            earlier = self._runs({SOURCE_SHA_TAG: push.after}, repo_selector) if push.after else []
            if earlier:
                return Outcome("already requested", runs=tuple(earlier), detail=skip)
            return Outcome("nothing to deliver", detail=skip)
        # Without a run key the daemon could not tell that the run was launched already and would
        # launch it again: such a request is left to its tick.
        requests = [r for r in requests if r.run_key]
        if not requests:
            return Outcome("nothing to deliver", detail="the sensor's requests carry no run key; left to its tick")
        # Before the checks, so that the last check is as close to the launch as it can be.
        added = self._add_partitions(repo_selector, evaluation.get("dynamicPartitionsRequests") or ())
        to_launch: list[_RunRequest] = []
        existing: list[str] = []
        for request in requests:
            found = self._runs({RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: self.sensor}, repo_selector)
            if found:  # the daemon launched it after the dry run
                existing.extend(found)
            else:
                to_launch.append(request)
        if not to_launch:
            return Outcome("already requested", runs=tuple(existing))
        # A tick of the daemon that started since the dry run may be about to launch the same run key
        # (it checks for existing runs only once it has evaluated the sensor): let it finish first.
        now = self._sensor_state(selector)
        if now.ticking or now.cursor != state.cursor:
            return None
        launched = [self._launch(repo_selector, request, added) for request in to_launch]
        return Outcome("launched", runs=tuple(launched + existing))

    def _wait_for_tick(self, selector: Mapping[str, str]) -> None:
        deadline = self._clock() + TICK_WAIT_SECONDS
        while self._clock() < deadline and self._sensor_state(selector).ticking:
            self._sleep(TICK_POLL_SECONDS)

    def _locate(self) -> tuple[str, str]:
        """(code location, repository) that holds both the sensor and its job, as find_job finds a job."""
        result = self.client.query(REPOSITORIES)["repositoriesOrError"]
        if result["__typename"] != "RepositoryConnection":
            raise WebhookError(f"the webserver cannot list its code locations: {result.get('message')}",
                               transient=True)
        for repo in result["nodes"]:
            if (any(s["name"] == self.sensor for s in repo["sensors"])
                    and any(j["name"] == self.job for j in repo["jobs"])):
                return repo["location"]["name"], repo["name"]
        raise WebhookError(f"no code location at {self.client.shown_url} has the sensor {self.sensor} with the "
                           f"job {self.job}; is the pipeline's code location loaded?")

    def _sensor_state(self, selector: Mapping[str, str]) -> _SensorState:
        result = self.client.query(SENSOR_STATE, {"selector": selector})["sensorOrError"]
        if result["__typename"] != "Sensor":
            raise WebhookError(f"{self.sensor}: {result.get('message') or result['__typename']}")
        state = result["sensorState"]
        data = state.get("typeSpecificData") or {}
        ticks = state.get("ticks") or ()
        # A STARTED tick older than a sensor evaluation may last was left by a daemon that died.
        ticking = bool(ticks) and ticks[0]["status"] == "STARTED" and \
            self._clock() - float(ticks[0]["timestamp"]) < STALE_TICK_SECONDS
        return _SensorState(str(state["status"]), data.get("lastCursor"), ticking)

    def _dry_run(self, selector: Mapping[str, str], cursor: str | None) -> Mapping[str, Any]:
        result = self.client.query(DRY_RUN, {"selector": selector, "cursor": cursor})["sensorDryRun"]
        if result["__typename"] != "DryRunInstigationTick":
            raise WebhookError(f"{self.sensor} could not be evaluated: {result.get('message') or result['__typename']}")
        evaluation = result.get("evaluationResult") or {}
        error = evaluation.get("error")
        if error:
            # The sensor raised (e.g. the remote refused git): its tick fails the same way; polling retries.
            raise WebhookError(f"{self.sensor} failed: {first_line(str(error.get('message')))[:300]}", transient=True)
        return evaluation

    def _run_request(self, raw: Mapping[str, Any]) -> _RunRequest:
        try:
            config = yaml.safe_load(raw.get("runConfigYaml") or "") or {}
        except yaml.YAMLError as e:
            raise WebhookError(f"{self.sensor} requested a run whose config is not YAML") from e
        return _RunRequest(run_key=raw.get("runKey"), job=raw.get("jobName") or self.job,
                           run_config=config if isinstance(config, dict) else {},
                           tags={t["key"]: t["value"] for t in raw.get("tags") or ()})

    def _runs(self, tags: Mapping[str, str], repo_selector: Mapping[str, str]) -> list[str]:
        """Ids of runs of this repository carrying every one of ``tags``, newest first."""
        run_filter = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        result = self.client.query(RUNS, {"filter": run_filter})["runsOrError"]
        if result["__typename"] != "Runs":
            raise WebhookError(f"the webserver cannot list runs: {result.get('message')}")
        wanted = (repo_selector["repositoryLocationName"], repo_selector["repositoryName"])
        # The daemon only counts runs of the sensor's own repository (fetch_existing_runs); so do we.
        return [r["runId"] for r in result["results"]
                if not r.get("repositoryOrigin") or (r["repositoryOrigin"]["repositoryLocationName"],
                                                     r["repositoryOrigin"]["repositoryName"]) == wanted]

    def _add_partitions(self, repo_selector: Mapping[str, str], requests: Sequence[Mapping[str, Any]]) -> list[str]:
        """Adds what the sensor's ADD_PARTITIONS requests name (the run validates its partition);
        deletions are left to the daemon's tick. Returns the keys added or already there."""
        keys: list[str] = []
        for request in requests:
            if request.get("type") != "ADD_PARTITIONS":
                continue
            for key in request.get("partitionKeys") or ():
                result = self.client.query(ADD_PARTITION, {"repositorySelector": repo_selector,
                                                           "partitionsDefName": request["partitionsDefName"],
                                                           "partitionKey": key})["addDynamicPartition"]
                if result["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
                    raise WebhookError(f"partition {key} of {request['partitionsDefName']} could not be added: "
                                       f"{result.get('message') or result['__typename']}")
                keys.append(str(key))
        return keys

    def _launch(self, repo_selector: Mapping[str, str], request: _RunRequest, added: Sequence[str]) -> str:
        tags = dict(request.tags)
        if PARTITION_NAME_TAG not in tags and len(added) == 1:
            tags[PARTITION_NAME_TAG] = added[0]  # the sensor requests one partition with its run
        # What the daemon adds to a sensor's run, so that its next tick recognises this run as its own.
        tags.update({RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: self.sensor, TRIGGER_TAG: "webhook"})
        params = {
            "selector": {**repo_selector, "jobName": request.job},
            "runConfigData": dict(request.run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.client.query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return str(result["run"]["runId"])
        if result["__typename"] == "RunConfigValidationInvalid":
            messages = "; ".join(e["message"] for e in result["errors"])
            raise WebhookError(f"{request.job}: invalid run config: {messages}")
        raise WebhookError(f"{request.job} could not be launched ({result['__typename']}): {result.get('message')}")


# --- one evaluation at a time ---------------------------------------------------------------------

@dataclass
class _Ticket:
    push: Push
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: str | None = None
    error_status: int = 502
    on_late: Callable[[_Ticket], None] | None = None  # set when the answer went out before the result
    lock: threading.Lock = field(default_factory=threading.Lock)
    submitted: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # from submit to result: the wait for the worker, and the evaluation

    def finish(self, outcome: Outcome | None, error: str | None, status: int = 502) -> None:
        with self.lock:
            self.outcome, self.error, self.error_status = outcome, error, status
            self.seconds = time.monotonic() - self.submitted
            self.done.set()
            late = self.on_late
        if late is not None:
            late(self)

    def wait(self, timeout: float, on_late: Callable[[_Ticket], None]) -> bool:
        """True when finished within ``timeout``; otherwise ``on_late`` is called when it finishes."""
        if self.done.wait(timeout):
            return True
        with self.lock:
            if self.done.is_set():
                return True
            self.on_late = on_late
            return False


class SerialTrigger:
    """Runs the trigger on one worker thread; every event that arrives while an evaluation runs waits
    for the next one, and all of them share it (the sensor looks at the branch head, not at the event)."""

    def __init__(self, trigger: Trigger, log: Log) -> None:
        self._trigger = trigger
        self._log = log
        self._cond = threading.Condition()
        self._pending: list[_Ticket] = []
        self._stopping = False
        self.evaluations = 0
        self._thread = threading.Thread(target=self._loop, name="coelho-webhook-trigger", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Events waiting for the next evaluation."""
        with self._cond:
            return len(self._pending)

    def submit(self, push: Push) -> _Ticket:
        ticket = _Ticket(push)
        with self._cond:
            if self._stopping:
                ticket.finish(None, "the receiver is stopping", 503)
                return ticket
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        with self._cond:
            self._stopping = True
            left, self._pending = self._pending, []
            self._cond.notify_all()
        for ticket in left:
            ticket.finish(None, "the receiver is stopping", 503)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch, self._pending = self._pending, []
            outcome: Outcome | None = None
            error: str | None = None
            try:
                outcome = self._trigger(batch[-1].push)  # the newest event; the sensor reads the branch anyway
            except PipelineError as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - an answer and a log line, not a dead worker thread
                error = f"unexpected {type(e).__name__} while evaluating the sensor"
                self._log(f"{error}: {_printable(e, 300)}")
            self.evaluations += 1
            for ticket in batch:
                ticket.finish(outcome, error)


# --- HTTP -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    body: Mapping[str, Any]
    log: str


class WebhookServer(ThreadingHTTPServer):
    """The receiver. ``trigger`` is what a verified push to ``branch`` starts (DagsterTrigger in production)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, secret: str, trigger: Trigger, branch: str = DEFAULT_BRANCH,
                 log: Log = stderr_log, answer_wait: float = ANSWER_WAIT_SECONDS,
                 max_body: int = MAX_BODY_BYTES) -> None:
        if not secret:
            raise ValueError(f"{SECRET_ENV} is empty")
        self._secret = secret.encode("utf-8")
        self.branch = branch
        self.log = log
        self.answer_wait = answer_wait
        self.max_body = max_body
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.serial = SerialTrigger(trigger, log)
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self.serial.stop(0)
            raise

    def __repr__(self) -> str:  # never the secret
        return f"WebhookServer({self.server_address!r}, branch={self.branch!r})"

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's FQDN; a receiver has no use for it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def close(self) -> None:
        """After shutdown(): closes the socket and lets an evaluation under way finish (bounded)."""
        self.server_close()
        self.serial.stop()

    def _token_ok(self, token: str | None) -> bool:
        if token is None:
            return False
        return hmac.compare_digest(token.encode("latin-1", "replace"), self._secret)

    def _signature_ok(self, signature: str | None, body: bytes) -> bool:
        if signature is None:
            return False
        expected = b"sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode("ascii")
        return hmac.compare_digest(signature.strip().encode("latin-1", "replace"), expected)

    def respond(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """The answer to one POST; ``headers`` with lower-case names."""
        gitlab_event, github_event = headers.get("x-gitlab-event"), headers.get("x-github-event")
        if gitlab_event is not None or "x-gitlab-token" in headers:
            source, kind = "gitlab", gitlab_event or ""
            if not self._token_ok(headers.get("x-gitlab-token")):
                return self._unauthorized(source, kind, "missing or wrong X-Gitlab-Token")
            is_push = kind == "Push Hook"
        elif github_event is not None or "x-hub-signature-256" in headers:
            source, kind = "github", github_event or ""
            if not self._signature_ok(headers.get("x-hub-signature-256"), body):
                return self._unauthorized(source, kind, "missing or wrong X-Hub-Signature-256")
            if kind == "ping":
                return Answer(200, {"outcome": "pong"}, f"{source} ping -> pong")
            is_push = kind == "push"
        else:
            return self._unauthorized("unknown", "", "neither X-Gitlab-Token nor X-Hub-Signature-256")
        label = f"{source} {_printable(kind, 40) or '-'}"
        if not is_push:
            return Answer(200, {"outcome": "ignored", "detail": "not a push event"}, f"{label} -> ignored (not a push)")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return Answer(400, {"error": "the body is not JSON"}, f"{label} -> 400 (body is not JSON)")
        ref = data.get("ref") if isinstance(data, dict) else None
        if not isinstance(ref, str) or not ref:
            return Answer(400, {"error": "the event has no ref"}, f"{label} -> 400 (no ref)")
        after = data.get("after")
        after = after.lower() if isinstance(after, str) and _SHA.match(after.lower()) else ""
        label = f"{label} ref={_printable(ref)} after={after or '-'}"
        if ref != f"refs/heads/{self.branch}":
            return Answer(200, {"outcome": "ignored", "detail": f"not refs/heads/{self.branch}"},
                          f"{label} -> ignored (not the watched branch)")
        if after and _NULL_SHA.match(after):
            return Answer(200, {"outcome": "ignored", "detail": "the branch was deleted"},
                          f"{label} -> ignored (branch deleted)")
        ticket = self.serial.submit(Push(source, ref, after))
        if not ticket.wait(self.answer_wait, lambda t: self.log(f"{label} -> later: {self._result(t).log}")):
            return Answer(202, {"outcome": "accepted", "detail": "the sensor is still being evaluated; see the "
                                "receiver's log and the Runs page"}, f"{label} -> accepted (still evaluating)")
        result = self._result(ticket)
        return Answer(result.status, result.body, f"{label} -> {result.log}")

    @staticmethod
    def _result(ticket: _Ticket) -> Answer:
        took = f" in {ticket.seconds:.2f}s"
        if ticket.outcome is not None:
            return Answer(200, ticket.outcome.body(), ticket.outcome.describe() + took)
        error = ticket.error or "no outcome"
        return Answer(ticket.error_status, {"outcome": "error", "error": error},
                      f"{ticket.error_status} ({error}){took}")

    @staticmethod
    def _unauthorized(source: str, kind: str, why: str) -> Answer:
        return Answer(401, {"error": "unauthorized"}, f"{source} {_printable(kind, 40) or '-'} -> 401 ({why})")


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    timeout = READ_TIMEOUT_SECONDS
    server_version = "coelho-webhook"
    sys_version = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self._send(Answer(411, {"error": "a Content-Length is required"}, "-> 411 (no Content-Length)"))
            return
        length = int(length_text)
        if length > self.server.max_body:
            self._send(Answer(413, {"error": f"the body is over {self.server.max_body} bytes"},
                              f"-> 413 ({length} bytes)"))
            return
        try:
            body = self.rfile.read(length)
        except (TimeoutError, ConnectionError):
            self.server.log("a client stopped sending its body; connection closed")
            self.close_connection = True
            return
        if len(body) < length:
            self.server.log("a client closed its connection before sending its whole body")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.server.respond(headers, body))

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] == "/healthz":
            self._send(Answer(200, {"status": "ok"}, ""))
        else:
            self._send(Answer(405, {"error": "POST push events here"}, ""))

    def _send(self, answer: Answer) -> None:
        payload = json.dumps(answer.body).encode("utf-8") + b"\n"
        # Logged before answering, so whoever has the answer can already read what was done.
        if answer.log:
            self.server.log(answer.log)
        try:
            self.send_response(answer.status)
            if answer.status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, TimeoutError):
            pass  # the sender gave up; the log line above still tells what happened

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # The one line per event is written by _send; http.server's access log would repeat it.
        pass

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.log(_printable(format % args, 200))


# --- the command ------------------------------------------------------------------------------------

def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host, int(port_text)


def main(*, listen: str | None = None, url: str | None = None, env: Mapping[str, str] | None = None,
         err: TextIO | None = None, log: Log = stderr_log, target: str | None = None) -> int:
    """Serves until SIGTERM or SIGINT; 0 after a clean stop, 2 when it cannot start.

    ``target`` (``project/environment``): whose push sensor to evaluate when COELHO_TARGETS lists
    several; one receiver per project, each with its project's branch in COELHO_GIT_BRANCH."""
    env = os.environ if env is None else env
    err = err or sys.stderr
    secret = env.get(SECRET_ENV, "").strip()
    if not secret:
        print(f"coelho webhook: {SECRET_ENV} is not set: give it the secret token configured on the GitLab or "
              "GitHub webhook (it is read from the environment only, never from the command line)", file=err)
        return EXIT_ERROR
    where = listen or env.get(LISTEN_ENV, "").strip() or DEFAULT_LISTEN
    try:
        host, port = parse_listen(where)
    except ValueError as e:
        print(f"coelho webhook: --listen/{LISTEN_ENV}: {e}", file=err)
        return EXIT_ERROR
    try:
        names = TargetNames.parse(target)
    except ValueError as e:
        print(f"coelho webhook: --target: {e}", file=err)
        return EXIT_ERROR
    branch = env.get(BRANCH_ENV, "").strip() or DEFAULT_BRANCH
    client = DagsterClient(url or env.get(URL_ENV, "").strip() or DEFAULT_URL)
    trigger = DagsterTrigger(client, sensor=names.name(SENSOR_NAME), job=names.name(JOB_NAME))
    try:
        server = WebhookServer((host, port), secret=secret, trigger=trigger, branch=branch, log=log)
    except OSError as e:
        print(f"coelho webhook: cannot listen on {host}:{port}: {e.strerror or e}", file=err)
        return EXIT_ERROR
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                               name="coelho-webhook-http", daemon=True)
    serving.start()
    bound_host, bound_port = server.server_address[:2]
    log(f"listening on http://{_host_for_url(str(bound_host))}:{bound_port}/ for pushes to refs/heads/{branch}; "
        f"Dagster webserver {client.shown_url}")
    if len(secret) < SECRET_MIN_LENGTH:
        log(f"warning: {SECRET_ENV} is shorter than {SECRET_MIN_LENGTH} characters; use a long random one")
    if not is_loopback(host):
        log("warning: listening beyond loopback over plain HTTP; put a TLS-terminating proxy in front "
            "(GitLab sends its token in clear)")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        started = time.monotonic()
        server.shutdown()
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log(f"stopped ({time.monotonic() - started:.1f}s to stop)")
    return EXIT_OK


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["Answer", "DagsterTrigger", "Outcome", "Push", "SerialTrigger", "Trigger", "WebhookError",
           "WebhookServer", "main", "parse_listen"]
