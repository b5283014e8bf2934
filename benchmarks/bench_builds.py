"""P4: how many images a commit builds, and whether a three-app commit builds its images at the same time.

    .venv/bin/python benchmarks/bench_builds.py [--quick] [--rounds N]

Starts its own registry and git daemon on free 127.0.0.1 ports, seeds a source repository the way
the tests do (tests/fixtures/apps: COPY-only images on the local base, + this repo's k3d/) and
delivers the seed commit once, untimed (all three images). Then it pushes and delivers, in
process (the harness's Pipeline.deliver, as bench_delivery.py does):

* a one-app commit (apps/fastapi/main.py): 1 build expected;
* a docs-only commit (README.md): 0 builds expected;
* ``--rounds`` three-app commits (main.py of all three apps): 3 builds expected, and for each the
  intervals of the three builds: from the moment the pipeline called the docker SDK's build for
  that ref (this process wraps ``docker.APIClient.build`` to note the time; the pipeline runs in
  process) to the Docker engine's ``push`` event of that ref (events API, ``type=image``). Without
  those, the image asset's "<app>: building <ref>" log line and the image/<app> materialization
  stand in (the detail says which was used). The figure is the largest number of those intervals
  that overlap at one moment (1 = one after the other, 3 = all at once).

A build is counted from the run's image/<app> materializations (``rebuilt`` true); the "building"
log lines and the engine's push events are counted too and must agree. After each three-app
delivery the same three contexts are built and pushed by hand (git archive + docker SDK build +
push, one after the other, main.py changed so no layer is a cache hit), and the images step's time
(STEP_START -> STEP_SUCCESS) is set against the sum of those raw builds.

Needs a Docker engine (DOCKER_HOST or the default socket) and the local base images
(scripts/base-images.sh); scripts/bench provides both. Dagster's run log goes to stderr; the figures
go to stdout.
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tests' harness seeds the repo and drives the job
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_delivery  # noqa: E402
import dagster as dg  # noqa: E402
import docker  # noqa: E402
from conftest import BASE_IMAGES  # noqa: E402
from figures import Figure, table  # noqa: E402
from pipeline_harness import APPS, Pipeline, materializations, settings_for  # noqa: E402

from coelho_pipeline.catalog import App  # noqa: E402
from coelho_pipeline.dev import services  # noqa: E402

BUILDING = re.compile(r"^(?P<app>[a-z0-9_-]+): building (?P<ref>\S+)")


@dataclass
class Build:
    app: str
    ref: str
    start: float  # epoch seconds: the SDK build call (or the "building" log line)
    end: float  # epoch seconds: the engine's push event (or the materialization)
    start_source: str  # "build call" | "log line"
    end_source: str  # "push event" | "materialization"


class BuildCalls:
    """Notes when ``docker.APIClient.build`` is called for each tag, while active (the pipeline builds in
    this process, on its own clients, in its own threads)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._original = None

    def __enter__(self) -> BuildCalls:
        original = self._original = docker.APIClient.build
        calls = self

        @functools.wraps(original)
        def build(api, *args, **kwargs):
            tag = kwargs.get("tag")
            if tag:
                with calls._lock:
                    calls.started.setdefault(tag, time.time())
            return original(api, *args, **kwargs)

        docker.APIClient.build = build
        return self

    def __exit__(self, *exc: object) -> None:
        docker.APIClient.build = self._original


@dataclass
class Delivery:
    kind: str
    sha: str
    rebuilt: list[str]  # apps whose image/<app> materialization says rebuilt
    building_lines: int
    push_events: int
    images_step: float | None
    builds: list[Build] = field(default_factory=list)
    raw: dict[str, float] = field(default_factory=dict)  # app -> raw archive + build + push seconds

    @property
    def overlap(self) -> int:
        return max_overlap([(b.start, b.end) for b in self.builds])


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment (an end at the same instant as a start does not overlap)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = open_now = 0
    for _, delta in points:
        open_now += delta
        best = max(best, open_now)
    return best


def _events_since(client: docker.DockerClient, since: float, until: float) -> list[dict]:
    """The engine's image events in [since, until] (the call returns once ``until`` has passed)."""
    return list(client.events(since=int(since) - 1, until=int(until) + 1, decode=True, filters={"type": "image"}))


def _delivery_facts(pipeline: Pipeline, result: dg.ExecuteInProcessResult, events: list[dict],
                    build_calls: dict[str, float], kind: str, sha: str) -> Delivery:
    T = dg.DagsterEventType
    mats = materializations(result)
    rebuilt = {k.split("/", 1)[1]: md["image"] for k, md in mats.items() if k.startswith("image/") and md["rebuilt"]}
    lines: dict[str, float] = {}  # ref -> "building" log line
    mat_times: dict[str, float] = {}
    step_start = step_end = None
    for entry in pipeline.instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            match = BUILDING.match(entry.user_message or "")
            if match:
                lines[match["ref"]] = entry.timestamp
            continue
        if event.step_key == "images" and event.event_type == T.STEP_START:
            step_start = entry.timestamp
        elif event.step_key == "images" and event.event_type == T.STEP_SUCCESS:
            step_end = entry.timestamp
        elif event.event_type == T.ASSET_MATERIALIZATION:
            key = event.event_specific_data.materialization.asset_key.to_user_string()
            if key.startswith("image/"):
                mat_times[key.split("/", 1)[1]] = entry.timestamp
    pushes = {e.get("id") or e.get("Actor", {}).get("ID"): e["timeNano"] / 1e9
              for e in events if e.get("Action") == "push"}
    builds = []
    for app, ref in sorted(rebuilt.items()):
        start, start_source = ((build_calls[ref], "build call") if ref in build_calls
                               else (lines.get(ref, mat_times[app]), "log line"))
        end, end_source = (pushes[ref], "push event") if ref in pushes else (mat_times[app], "materialization")
        builds.append(Build(app, ref, start, end, start_source, end_source))
    return Delivery(kind, sha, sorted(rebuilt), len(lines), sum(1 for ref in pushes if ref in rebuilt.values()),
                    step_end - step_start if step_start is not None and step_end is not None else None, builds)


def deliver(pipeline: Pipeline, client: docker.DockerClient, sha: str, kind: str) -> Delivery:
    since = time.time()
    with BuildCalls() as calls:
        result = pipeline.deliver(sha, raise_on_error=True)
    until = time.time()
    facts = _delivery_facts(pipeline, result, _events_since(client, since, until), calls.started, kind, sha)
    print(f"{kind} commit {sha[:12]}: rebuilt {facts.rebuilt}, 'building' lines {facts.building_lines}, "
          f"push events {facts.push_events}, overlap {facts.overlap}"
          + "".join(f"\n  {b.app}: {b.start - since:6.2f} ({b.start_source}) .. {b.end - since:6.2f} s "
                    f"({b.end_source})" for b in facts.builds), file=sys.stderr, flush=True)
    return facts


def raw_build(api: docker.APIClient, bare: Path, sha: str, app: App, repository: str, label: str) -> float:
    """git archive of the app's context at ``sha`` + docker build + push as ``:<label>``, in seconds."""
    t0 = time.perf_counter()
    # The pipeline has just built this very context: change main.py so the COPY layer is new here too,
    # and differently per app (three identical contexts would make the second and third cache hits).
    context = bench_delivery.changed_context(bare, sha, app.context, "main.py", f"print('raw {app.name} {label}')\n")
    bench_delivery.build(api, context, f"{repository}:{label}", BASE_IMAGES)
    bench_delivery.push(api, repository, label)
    return time.perf_counter() - t0


def measure(rounds: int) -> tuple[list[Delivery], object]:
    if not services.engine_answers(None):
        raise RuntimeError("no Docker engine answers (DOCKER_HOST or the default socket)")
    client = docker.from_env(timeout=600)
    tmp = Path(tempfile.mkdtemp(prefix="coelho-bench-builds-"))
    started: list[services.Service] = []
    made: list[str] = []  # image refs this run tagged in the engine, removed at the end
    try:
        try:
            client.images.get(BASE_IMAGES["PYTHON_IMAGE"])
        except docker.errors.ImageNotFound:
            raise RuntimeError(f"{BASE_IMAGES['PYTHON_IMAGE']} is missing: run scripts/base-images.sh") from None
        prefix, repo = bench_delivery.start_registry_and_source(tmp, started)
        out: list[Delivery] = []
        with dg.instance_for_test() as instance:
            pipeline = Pipeline(repo, settings_for(repo, prefix, tmp / "work", BASE_IMAGES), instance)
            concurrency = getattr(pipeline.settings, "build_concurrency", "unset")
            seed = deliver(pipeline, client, repo.head(), "seed (untimed warm-up)")
            made += [b.ref for b in seed.builds]
            commits = [("one-app", {"apps/fastapi/main.py": "print('fastapi: one-app commit')\n"}),
                       ("docs-only", {"README.md": "# COELHO RealTime (fixture)\n\nA docs-only change.\n"})]
            commits += [(f"three-app #{n}", {f"apps/{app}/main.py": f"print('{app}: three-app commit {n}')\n"
                                             for app in APPS}) for n in range(1, rounds + 1)]
            for kind, files in commits:
                sha = repo.push(files, f"bench: {kind} commit")
                facts = deliver(pipeline, client, sha, kind)
                made += [b.ref for b in facts.builds]
                if kind.startswith("three-app"):
                    # The same three builds by hand, one after the other, for the images step to be set against.
                    for app in (App(name) for name in APPS):
                        label = f"raw-{sha[:12]}"
                        facts.raw[app.name] = raw_build(client.api, repo.bare, sha, app, f"{prefix}/{app.image}",
                                                        label)
                        made.append(f"{prefix}/{app.image}:{label}")
                out.append(facts)
        return out, concurrency
    finally:
        for service in reversed(started):
            service.stop()
        for ref in made:  # only the exact tags this run made; nothing else in the engine is touched
            try:
                client.images.remove(ref)
            except docker.errors.APIError:
                pass
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def figures_for(deliveries: Sequence[Delivery], concurrency: object = "unset") -> list[Figure]:
    def counted(d: Delivery) -> str:
        agree = "" if d.building_lines == len(d.rebuilt) == d.push_events else " (the counts disagree)"
        return (f"image/<app> materializations rebuilt: {', '.join(d.rebuilt) or 'none'}; 'building' log lines "
                f"{d.building_lines}, engine push events {d.push_events}{agree}")

    by_kind = {d.kind: d for d in deliveries}
    three = [d for d in deliveries if d.kind.startswith("three-app")]
    out = [
        Figure("P4", "builds for a one-app commit", len(by_kind["one-app"].rebuilt), "builds", 1, "==",
               counted(by_kind["one-app"])),
        Figure("P4", "builds for a docs-only commit", len(by_kind["docs-only"].rebuilt), "builds", 0, "==",
               counted(by_kind["docs-only"])),
        # Every three-app delivery must build 3: the figure is the first that did not, if any.
        Figure("P4", "builds for a three-app commit", next((len(d.rebuilt) for d in three if len(d.rebuilt) != 3), 3),
               "builds", 3, "==",
               (f"each of {len(three)} deliveries: {counted(three[0])}" if len({counted(d) for d in three}) == 1
                else "; ".join(f"{d.kind}: {counted(d)}" for d in three))),
    ]

    def spans(d: Delivery) -> str:
        t0 = min(b.start for b in d.builds) if d.builds else 0.0
        return ", ".join(f"{b.app} {b.start - t0:.2f}-{b.end - t0:.2f}" for b in d.builds)

    starts = sorted({b.start_source for d in three for b in d.builds})
    ends = sorted({b.end_source for d in three for b in d.builds})
    out.append(Figure(
        "P4", "3-app builds concurrent (max overlapping builds)", min(d.overlap for d in three), "builds", 3, "==",
        f"{'least of ' + str(len(three)) + ' deliveries: ' if len(three) > 1 else ''}"
        f"{'; '.join(f'{d.overlap} [{spans(d)} s]' for d in three)}; interval: "
        f"{' / '.join(starts) or '-'} .. {' / '.join(ends) or '-'}; COELHO_BUILD_CONCURRENCY "
        f"{concurrency}"))
    steps = [d.images_step for d in three if d.images_step is not None]
    raws = [sum(d.raw.values()) for d in three if d.raw]
    if steps and raws:
        step, raw = statistics.median(steps), statistics.median(raws)
        parts = statistics.median([d.raw[a] for d in three for a in d.raw])
        out.append(Figure(
            "P4", "3-app commit: images step / sum of its 3 raw builds", step / raw, "x", None, "",
            f"images step {step:.2f} s (STEP_START..STEP_SUCCESS) vs raw {raw:.2f} s = 3 x git archive + docker "
            f"build + push by hand, one after the other (median raw build {parts:.2f} s); medians of "
            f"{len(three)}; below 1 only when the builds overlap"))
    return out


def run(options: argparse.Namespace | None = None) -> list[Figure]:
    quick = bool(getattr(options, "quick", False))
    rounds = getattr(options, "builds_rounds", None) or (1 if quick else 3)
    return figures_for(*measure(rounds))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one three-app commit instead of three")
    parser.add_argument("--rounds", dest="builds_rounds", type=int, help="three-app commits to deliver")
    print(table(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
