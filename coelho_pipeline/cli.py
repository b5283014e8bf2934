"""``coelho status | diff | sync [--force] | rollback <sha> | release | metrics [--since DATE]``: run a
runbook job on the running Dagster instance and print its report.

The job is launched through the webserver's GraphQL API (``--url``, ``$COELHO_DAGSTER_URL``, default
``http://127.0.0.1:3070``), so it runs where the pipeline's settings and credentials are, and shows
on the Runs page. The command waits for the run (``--timeout``), then prints the markdown report
from the step's output metadata, or the step's error.

Exit status: 0 done; 1 ``diff`` found differences (as ``argocd app diff`` does); 2 the run failed,
timed out, or the webserver could not be used.

``coelho webhook`` is the other kind of command: a long-running receiver of push events that has
the push sensor evaluated at once (coelho_pipeline.webhook).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import requests

from coelho_pipeline.errors import PipelineError
from coelho_pipeline.insight.dora import parse_since
from coelho_pipeline.kube import first_line
from coelho_pipeline.targets import TargetNames

DEFAULT_URL = "http://127.0.0.1:3070"
URL_ENV = "COELHO_DAGSTER_URL"
TARGET_ENV = "COELHO_TARGET"
# (connect, read) seconds per GraphQL request; a launch waits for the code server, hence the read bound.
HTTP_TIMEOUT: tuple[float, float] = (5.0, 60.0)
# Run monitoring's max_runtime_seconds in dagster.yaml: a rollback's sync wait, rollout wait and soak
# (600 + 300 + 60 s by default) all fit below it, and no run outlives it.
DEFAULT_RUN_TIMEOUT = 1800.0
POLL_SECONDS = 1.0

COMMANDS: Mapping[str, str] = {"status": "runbook_status", "diff": "runbook_diff", "sync": "runbook_sync",
                               "rollback": "rollback", "release": "release_hold", "metrics": "runbook_metrics",
                               "promote": "promote"}
ROLLBACK_OP, RELEASE_OP, METRICS_OP = "rollback_commit", "lift_hold", "delivery_metrics_report"
SYNC_OP = "application_sync"
REPORT = "report"
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
EXIT_OK, EXIT_DIFFERENCES, EXIT_ERROR = 0, 1, 2


class CliError(PipelineError):
    """The webserver could not be used or the run did not succeed; the message says what to do."""


REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on Error { message }
  }
}
"""

LOGS = """
query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepOutputEvent {
          stepKey
          metadataEntries {
            label
            ... on MarkdownMetadataEntry { mdStr }
            ... on IntMetadataEntry { intValue }
          }
        }
        ... on MaterializationEvent {
          stepKey
          metadataEntries {
            label
            ... on MarkdownMetadataEntry { mdStr }
          }
        }
        ... on ExecutionStepFailureEvent {
          stepKey
          error { message className causes { message className } }
        }
        ... on RunFailureEvent { message }
      }
    }
    ... on Error { message }
  }
}
"""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str
    report: str | None
    differences: int | None
    errors: tuple[str, ...]


class DagsterClient:
    """The few GraphQL calls the CLI needs, each with a timeout."""

    def __init__(self, url: str, *, timeout: tuple[float, float] = HTTP_TIMEOUT,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()

    @property
    def shown_url(self) -> str:
        """The URL without any user:password part, for messages."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._session.post(f"{self.url}/graphql", json={"query": text, "variables": variables or {}},
                                          timeout=self.timeout)
        except requests.Timeout as e:
            raise CliError(f"the Dagster webserver at {self.shown_url} did not answer within "
                           f"{self.timeout[1]:g}s", transient=True) from e
        except requests.RequestException as e:
            raise CliError(f"cannot reach the Dagster webserver at {self.shown_url} ({type(e).__name__}); is it "
                           f"running (scripts/up, dagster dev)? Set --url or {URL_ENV} to where it listens",
                           transient=True) from e
        if response.status_code != 200:
            raise CliError(f"the Dagster webserver at {self.shown_url} answered HTTP {response.status_code} to a "
                           f"GraphQL request: {first_line(response.text)[:300]}")
        try:
            body = response.json()
        except ValueError as e:
            raise CliError(f"{self.shown_url}/graphql did not answer JSON; is this a Dagster webserver?") from e
        if body.get("errors"):
            raise CliError("GraphQL error: " + "; ".join(str(e.get("message")) for e in body["errors"]))
        return body.get("data") or {}

    def find_job(self, job: str) -> tuple[str, str]:
        """(code location, repository) that holds ``job``."""
        result = self.query(REPOSITORIES)["repositoriesOrError"]
        if result["__typename"] != "RepositoryConnection":
            raise CliError(f"the webserver cannot list its code locations: {result.get('message')}")
        for repo in result["nodes"]:
            if any(j["name"] == job for j in repo["jobs"]):
                return repo["location"]["name"], repo["name"]
        base = job.split("__", 1)[0]
        scoped = sorted(j["name"].split("__", 1)[1].replace("__", "/") for repo in result["nodes"]
                        for j in repo["jobs"] if j["name"].startswith(f"{base}__"))
        if scoped:
            raise CliError(f"no job {job} at {self.shown_url}: the pipeline delivers to several targets; give "
                           f"--target with one of {', '.join(scoped)}")
        raise CliError(f"no code location at {self.shown_url} has the job {job}; are the runbook jobs "
                       "registered in the definitions (coelho_pipeline.runbook_jobs.build_runbook_jobs)?")

    def launch(self, job: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        location, repository = self.find_job(job)
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
            "runConfigData": dict(run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return str(result["run"]["runId"])
        if result["__typename"] == "RunConfigValidationInvalid":
            raise CliError(f"{job}: invalid run config: " + "; ".join(e["message"] for e in result["errors"]))
        raise CliError(f"{job} could not be launched ({result['__typename']}): {result.get('message')}")

    def status(self, run_id: str) -> str:
        result = self.query(RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise CliError(f"run {run_id}: {result.get('message') or result['__typename']}")
        return str(result["status"])

    def wait(self, run_id: str, *, timeout: float, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> str:
        deadline = clock() + timeout
        while True:
            status = self.status(run_id)
            if status in TERMINAL:
                return status
            if clock() >= deadline:
                raise CliError(f"run {run_id} is still {status} after {timeout:g}s; it goes on, see "
                               f"{self.shown_url}/runs/{run_id}", transient=True)
            sleep(POLL_SECONDS)

    def result(self, run_id: str, status: str) -> RunResult:
        report: str | None = None
        differences: int | None = None
        errors: list[str] = []
        cursor: str | None = None
        while True:
            logs = self.query(LOGS, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if logs["__typename"] != "EventConnection":
                raise CliError(f"run {run_id}: cannot read its events: {logs.get('message')}")
            for event in logs["events"]:
                kind = event["__typename"]
                if kind in ("ExecutionStepOutputEvent", "MaterializationEvent"):
                    for entry in event.get("metadataEntries") or ():
                        if entry.get("label") == REPORT and entry.get("mdStr") is not None:
                            report = entry["mdStr"]
                        elif entry.get("label") == "differences" and entry.get("intValue") is not None:
                            differences = int(entry["intValue"])
                elif kind == "ExecutionStepFailureEvent":
                    error = event.get("error") or {}
                    causes = "".join(f"\n  caused by {c.get('className')}: {c.get('message')}"
                                     for c in error.get("causes") or ())
                    errors.append(f"step {event.get('stepKey')} failed: {error.get('message', '').strip()}{causes}")
                elif kind == "RunFailureEvent" and event.get("message"):
                    errors.append(str(event["message"]))
            cursor = logs["cursor"]
            if not logs["hasMore"]:
                break
        return RunResult(run_id, status, report, differences, tuple(errors))


def run_command(command: str, *, url: str, force: bool = False, timeout: float = DEFAULT_RUN_TIMEOUT,
                sha: str | None = None, reason: str | None = None, since: str | None = None,
                target: str | None = None, out: TextIO | None = None, err: TextIO | None = None,
                client: DagsterClient | None = None) -> int:
    """Launch the runbook job for ``command``, wait, print its report; returns the exit status.

    ``sha`` is the commit a rollback goes back to (the job's partition); ``reason`` is recorded
    with the hold a rollback sets or a release lifts; ``since`` starts the window of ``metrics``;
    ``target`` (``project/environment``) picks the target when the pipeline has several.
    """
    out, err = out or sys.stdout, err or sys.stderr
    try:
        names = TargetNames.parse(target)
    except ValueError as e:
        print(f"coelho: --target: {e}", file=err)
        return EXIT_ERROR
    dagster = client or DagsterClient(url)
    job = names.name(COMMANDS[command])
    tags = {"coelho/runbook": command, "coelho/launched-by": "coelho-cli"}
    run_config: dict[str, Any] = {}
    if command == "sync":
        run_config = {"ops": {names.name(SYNC_OP): {"config": {"force": force}}}}
    elif command == "rollback":
        if not sha or len(sha) != 40:
            print("coelho rollback: give the full 40-hex SHA of the delivered commit to go back to", file=err)
            return EXIT_ERROR
        tags["dagster/partition"] = sha
        run_config = {"ops": {names.asset_op(ROLLBACK_OP): {"config": {
            "reason": reason or "rolled back with coelho rollback"}}}}
    elif command == "promote":
        if not sha or len(sha) != 40:
            print("coelho promote: give the full 40-hex SHA of the commit whose verified delivery to promote",
                  file=err)
            return EXIT_ERROR
        if names.project is None:
            print("coelho promote: give --target project/environment, the environment to promote to", file=err)
            return EXIT_ERROR
        tags["dagster/partition"] = sha
    elif command == "release":
        run_config = {"ops": {names.name(RELEASE_OP): {"config": {"reason": reason or "released with coelho release"}}}}
    elif command == "metrics" and since is not None:
        try:
            parse_since(since)
        except ValueError as e:
            print(f"coelho metrics: --{e}", file=err)
            return EXIT_ERROR
        run_config = {"ops": {names.name(METRICS_OP): {"config": {"since": since}}}}
    label = f"{command} --force" if force else command
    try:
        run_id = dagster.launch(job, run_config, tags)
        print(f"{job}: run {run_id} launched on {dagster.shown_url}, waiting (up to {timeout:g}s)", file=err)
        status = dagster.wait(run_id, timeout=timeout)
        result = dagster.result(run_id, status)
    except CliError as e:
        print(f"coelho {label}: {e}", file=err)
        return EXIT_ERROR
    if status != "SUCCESS":
        print(f"coelho {label}: run {run_id} {status.lower()} ({dagster.shown_url}/runs/{run_id})", file=err)
        for line in result.errors or ("no step error recorded",):
            print(line, file=err)
        return EXIT_ERROR
    if result.report is None and command == "promote":
        # A promotion is a delivery: its record is the run's materializations, not a runbook report.
        out.write(f"promoted {sha} to {target}: run {run_id} succeeded ({dagster.shown_url}/runs/{run_id})\n")
        return EXIT_OK
    if result.report is None:
        print(f"coelho {label}: run {run_id} succeeded without a report", file=err)
        return EXIT_ERROR
    out.write(result.report if result.report.endswith("\n") else result.report + "\n")
    return EXIT_DIFFERENCES if command == "diff" and result.differences else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coelho", description="The runbook: Argo CD status, diff and sync, "
                                     "rollback, release and the delivery metrics, run as Dagster jobs on the "
                                     "running instance.")
    parser.add_argument("--url", default=os.environ.get(URL_ENV) or DEFAULT_URL,
                        help=f"the Dagster webserver (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--target", default=os.environ.get(TARGET_ENV) or None, metavar="PROJECT/ENVIRONMENT",
                        help=f"which target's job to run, when COELHO_TARGETS lists several (default ${TARGET_ENV})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_RUN_TIMEOUT,
                        help=f"seconds to wait for the run (default {DEFAULT_RUN_TIMEOUT:g})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="sync, health, revision, last operation, history, resources")
    sub.add_parser("diff", help="the chart at the branch head against the live objects (exit 1 when they differ)")
    sync = sub.add_parser("sync", help="refresh and sync the branch head, wait for Synced+Healthy")
    sync.add_argument("--force", action="store_true",
                      help="hard refresh, then sync with Replace=true and apply --force (argocd app sync --force)")
    rollback = sub.add_parser("rollback", help="roll back to an earlier delivered commit and hold deliveries")
    rollback.add_argument("sha", help="the full SHA of the source commit whose delivery to bring back")
    rollback.add_argument("--reason", help="why; recorded with the hold")
    promote = sub.add_parser("promote", help="promote a delivery verified upstream to --target's environment "
                             "(promotion: manual); nothing is built")
    promote.add_argument("sha", help="the full SHA of the source commit whose delivery to promote")
    release = sub.add_parser("release", help="lift the hold; the newest commit is delivered")
    release.add_argument("--reason", help="why; recorded with the release")
    metrics = sub.add_parser("metrics", help="the DORA keys and the rework rate from the pipeline's records")
    metrics.add_argument("--since", metavar="DATE",
                         help="start of the window, YYYY-MM-DD (UTC) or an ISO 8601 time (default: 28 days ago)")
    webhook = sub.add_parser("webhook", help="receive GitLab/GitHub push events and start the delivery at once "
                             "(secret in $COELHO_WEBHOOK_SECRET)")
    webhook.add_argument("--listen", metavar="HOST:PORT",
                         help="where to listen (default $COELHO_WEBHOOK_LISTEN or 127.0.0.1:3071)")
    # Its own dest: a subcommand's default would overwrite the top-level --url.
    webhook.add_argument("--url", dest="webhook_url", metavar="DAGSTER_URL",
                         help=f"the Dagster webserver (default ${URL_ENV} or {DEFAULT_URL})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "webhook":
        from coelho_pipeline import webhook  # imports this module

        return webhook.main(listen=args.listen, url=args.webhook_url or args.url, target=args.target)
    if args.timeout <= 0:
        print("coelho: --timeout must be positive", file=sys.stderr)
        return EXIT_ERROR
    return run_command(args.command, url=args.url, force=getattr(args, "force", False), timeout=args.timeout,
                       sha=getattr(args, "sha", None), reason=getattr(args, "reason", None),
                       since=getattr(args, "since", None), target=args.target)



if __name__ == "__main__":
    sys.exit(main())
