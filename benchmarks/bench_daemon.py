"""Daemon-side speed figures (issue 9): pushes delivered by the real Dagster daemon, against the raw work.

    .venv/bin/python benchmarks/bench_daemon.py [--quick] [--rounds N] [--idle-seconds S]
                                                [--skip P5,P6] [--only P2] [--keep]

Everything runs under ``dagster dev`` (webserver + daemon + code server, sqlite), started with the
environment the ``dagster_dev`` fixture of tests/conftest.py builds: a DAGSTER_HOME holding a copy of
dagster.yaml, this run's own registry and git daemon on free 127.0.0.1 ports, a source repository
made by tests/pipeline_harness.make_source_repo, and the Argo CD controller double of
tests/argocd_double.py with no sync or rollout delay ("instant"). The Docker engine is DOCKER_HOST's
(or the default socket's); the base images come from scripts/base-images.sh.

Sessions (each its own ``dagster dev`` and source repository; the seed delivery, which builds every
app, is an untimed warm-up in each):

* trivial (tests/fixtures/apps): N one-app pushes (apps/fastapi/main.py), each at a random phase of
  the sensor's interval and delivered before the next -> P1 (delivery = the run's RUN_START ->
  RUN_SUCCESS, against the raw work of that round: bench_delivery.RawWork's docker SDK build + push
  of the changed app, git fetch/edit/commit/push of one values.yaml line, one render_chart), P2
  polling (push -> RUN_START, and push -> run created), P3 (push -> the double's Application Synced
  +Healthy at the run's manifest commit), growth at 3 apps; then P6 (idle CPU of the dagster dev
  process tree) and P5 (a burst of 20 pushes in 10 s).
* real: the same rounds on make_source_repo(real_apps=True), changing apps/fastapi/app/__init__.py
  (the real Dockerfile's dependency layer stays cached, its COPY app/ layer is rebuilt) -> P1 real.
* launcher: the trivial rounds in two sessions of the same run, dagster.yaml as shipped (runs forked
  from the warm process, coelho_pipeline/launcher.py) and without its ``run_launcher`` (Dagster's
  default: the code server spawns a new interpreter per run) -> P1-launcher: overhead, worker boot.
* webhook: COELHO_POLL_INTERVAL_SECONDS=600 and ``coelho webhook``, a GitLab push event posted right
  after each push -> P2 webhook, P3 webhook. Reported "not available" when the command is missing.
* growth: 10 and 30 apps (copies of the fixture app, apps/app_NN/, with their values.yaml keys and a
  Deployment template each), one app changed -> overhead (delivery - raw) against 3 apps.

The verification soak after Synced+Healthy (COELHO_VERIFY_SOAK_SECONDS, 1 s in the fixture) is a wait
the user configures, not pipeline work: it is 0 here (one sample right after the rollout) unless
--verify-soak says otherwise. Progress goes to stderr, the figures table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import daemon_stack as ds
from bench_delivery import RAW_BRANCH, RawRound, RawWork
from conftest import BASE_IMAGES
from daemon_stack import (
    BenchError,
    DaemonSession,
    Delivery,
    Stack,
    Webhook,
    log,
    push_change,
)
from extra_apps import extra_app_names, extra_apps_rewrite, extra_image_values
from figures import Figure, table
from pipeline_harness import APPS, SourceRepo, make_source_repo

from coelho_pipeline.catalog import App
from coelho_pipeline.chart import argocd_helm_overrides
from coelho_pipeline.dev import services
from coelho_pipeline.values import read_scalar

PARTS = ("P1", "P1-real", "P1-postgres", "P1-launcher", "P2", "P2-webhook", "P3", "P5", "P6", "growth")
NAN = float("nan")
VALUES = "k3d/helm/values.yaml"
PIPELINE_EMAIL = "pipeline@coelho-realtime.local"


# -- options -------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="develop: 2 rounds, 30 s idle window, growth with 3 and 10 apps only")
    p.add_argument("--rounds", type=int, default=None, help="timed pushes per session (default 5, --quick 2)")
    p.add_argument("--idle-seconds", type=float, default=None, help="P6 window (default 300, --quick 30)")
    p.add_argument("--postgres-idle-seconds", type=float, default=None,
                   help="P1-postgres: idle window of each of its two sessions (default 60, --quick 20)")
    p.add_argument("--growth-sizes", default=None, help="apps in the catalog for growth (default 3,10,30; "
                                                        "--quick 3,10)")
    p.add_argument("--burst-pushes", type=int, default=20, help="P5: pushes in the burst (default 20)")
    p.add_argument("--burst-seconds", type=float, default=10.0, help="P5: over this many seconds (default 10)")
    p.add_argument("--skip", action="append", default=[], metavar="PART",
                   help=f"parts to leave out, comma-separated or repeated: {', '.join(PARTS)} "
                        "(P1 also skips P1-real, P1-postgres and P1-launcher)")
    p.add_argument("--only", action="append", default=[], metavar="PART", help="run only these parts")
    p.add_argument("--verify-soak", type=float, default=0.0,
                   help="COELHO_VERIFY_SOAK_SECONDS for dagster dev (default 0: one sample after the rollout)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, repositories)")
    return p


@dataclass
class Options:
    rounds: int
    idle_seconds: float
    postgres_idle_seconds: float
    growth_sizes: tuple[int, ...]
    burst_pushes: int
    burst_seconds: float
    parts: frozenset[str]
    verify_soak: float
    keep: bool
    quick: bool

    def wants(self, *parts: str) -> bool:
        return any(p in self.parts for p in parts)


def _split(values: Iterable[str] | str, *, strict: bool = False) -> set[str]:
    """Part names from --skip/--only values; unknown ones stop the CLI, and are ignored (logged) when the
    Namespace comes from another script (run_all's own part names)."""
    out = set()
    for value in [values] if isinstance(values, str) else values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            match = {p.lower(): p for p in PARTS}.get(part.lower()) or {"webhook": "P2-webhook",
                                                                        "real": "P1-real",
                                                                        "postgres": "P1-postgres",
                                                                        "launcher": "P1-launcher"}.get(part.lower())
            if match is None:
                if strict:
                    raise SystemExit(f"unknown part {part!r}: choose from {', '.join(PARTS)}")
                log(f"ignoring part {part!r}: not one of this benchmark's ({', '.join(PARTS)})")
                continue
            out.add(match)
    return out


def resolve(options: argparse.Namespace | None, *, strict: bool = False) -> Options:
    """This module's options from any Namespace (run_all's may lack some: the defaults fill them)."""
    ns = parser().parse_args([])
    for key, value in vars(options or argparse.Namespace()).items():
        setattr(ns, key, value)
    quick = bool(getattr(ns, "quick", False))
    rounds = ns.rounds if ns.rounds else (2 if quick else 5)
    idle = ns.idle_seconds if ns.idle_seconds else (30.0 if quick else 300.0)
    postgres_idle = ns.postgres_idle_seconds if ns.postgres_idle_seconds else (20.0 if quick else 60.0)
    sizes_text = ns.growth_sizes or ("3,10" if quick else "3,10,30")
    sizes = tuple(sorted({int(s) for s in str(sizes_text).split(",") if s.strip()}))
    if any(s < 3 for s in sizes):
        raise SystemExit("--growth-sizes: at least the 3 apps of the fixture")
    skip, only = _split(ns.skip or [], strict=strict), _split(ns.only or [], strict=strict)
    if (ns.only or []) and not only:
        raise SystemExit(f"--only names none of this benchmark's parts ({', '.join(PARTS)})")
    if "P1" in skip:
        skip |= {"P1-real", "P1-postgres", "P1-launcher"}
    parts = frozenset((only or set(PARTS)) - skip)
    return Options(rounds=max(1, int(rounds)), idle_seconds=float(idle), postgres_idle_seconds=float(postgres_idle),
                   growth_sizes=sizes,
                   burst_pushes=int(ns.burst_pushes), burst_seconds=float(ns.burst_seconds), parts=parts,
                   verify_soak=float(ns.verify_soak), keep=bool(ns.keep), quick=quick)


# -- small helpers -------------------------------------------------------------------------------

def med(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else NAN


def mx(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return max(xs) if xs else NAN


def failed(id_: str, label: str, unit: str, error: BaseException | str, target: float | None = None,
           comparison: str = "") -> Figure:
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return Figure(id_, label, NAN, unit, target, comparison, f"FAILED: {text}")


def unavailable(id_: str, label: str, unit: str, why: str) -> Figure:
    return Figure(id_, label, NAN, unit, None, "", f"not available: {why}")


def make_raw(stack: Stack, repo: SourceRepo, name: str, *, member: str = "main.py") -> RawWork:
    """RawWork on its own clone and branch of ``repo`` (its pushes never move the watched branch)."""
    clone = stack.tmp / f"{name}-raw-clone"
    services.git("clone", "-q", repo.url, str(clone), cwd=stack.tmp)
    services.git("checkout", "-q", "-b", RAW_BRANCH, cwd=clone)
    services.git("push", "-q", "origin", f"HEAD:refs/heads/{RAW_BRANCH}", cwd=clone)
    application = (clone / "k3d" / "argocd" / "application.yaml").read_text()
    assert stack.client is not None
    raw = RawWork(api=stack.client.api, source=repo, clone=clone, repository=f"{stack.prefix}/fastapi",
                  build_args=BASE_IMAGES, overrides=argocd_helm_overrides(application), member=member)
    return raw


def values_tag(repo: SourceRepo, rev: str, app: str = "fastapi") -> str:
    return read_scalar(repo.show(rev, VALUES), App(app).tag_path, source=VALUES)


# -- sessions ------------------------------------------------------------------------------------

@dataclass
class Round:
    delivery: Delivery
    raw: RawRound | None

    @property
    def overhead(self) -> float:
        return self.delivery.delivery - self.raw.total if self.raw else NAN

    @property
    def ratio(self) -> float:
        return self.delivery.delivery / self.raw.total if self.raw else NAN


def seed(session: DaemonSession, *, timeout: float, polling: bool = True) -> Delivery:
    """The first tick delivers the seeded head (every app built): untimed warm-up."""
    head = session.repo.head()
    started = time.time()
    log(f"{session.name}: waiting for the seed delivery of {head[:12]} (builds every app; untimed)")
    d = session.delivery(head, started, timeout=timeout)
    log(f"{session.name}: seed delivered in {d.delivery:.1f} s (rebuilt {len(d.rebuilt)} apps)")
    if d.manifest and polling:  # the sensor has seen the manifest commit: the next push starts clean
        session.wait_cursor(session.repo.head(), timeout=120)
    return d


def rounds(session: DaemonSession, n: int, change: Callable[[int], dict[str, str]], *, raw: RawWork | None,
           jitter: float, webhook: Webhook | None = None, expect: set[str] | None = None,
           notes: list[str] | None = None) -> list[Round]:
    """``n`` pushes, each delivered (and its raw work done) before the next; a push lands at a random
    phase (0..``jitter`` s) after the previous round, so the sensor's polling phase is sampled."""
    out: list[Round] = []
    tag = uuid.uuid4().hex[:6]
    for i in range(1, n + 1):
        if jitter > 0:
            time.sleep(random.uniform(0, jitter))
        before = session.repo.head()
        sha, pushed_at = push_change(session.repo, change(i), f"FastAPI: {session.name} round {i} ({tag})")
        if webhook is not None:
            status = webhook.post(session.repo.branch, before, sha)
            if status >= 300:
                raise BenchError(f"the webhook answered HTTP {status} to a push event: {webhook.last_answer}\n"
                                 f"{webhook.log_tail()}")
            if notes is not None and "launched" not in webhook.last_answer:
                notes.append(f"round {i}: the webhook answered {webhook.last_answer}")
        d = session.delivery(sha, pushed_at)
        if expect is not None and d.rebuilt != expect and notes is not None:
            notes.append(f"round {i} rebuilt {sorted(d.rebuilt)}, not {sorted(expect)}")
        r = raw.round(sha, f"raw-{session.name}-{tag}-{i}") if raw else None
        out.append(Round(d, r))
        log(f"{session.name} round {i}/{n}: push->created {d.to_created:.2f} s, push->RUN_START {d.to_start:.2f} s, "
            f"delivery {d.delivery:.2f} s"
            + (f", raw {r.total:.2f} s" if r else "")
            + (f", push->Synced+Healthy {d.to_synced:.2f} s" if d.to_synced is not None else ", never Synced?"))
    return out


def phase_summary(name: str, rs: Sequence[Round]) -> str:
    """Median of each phase between push and RUN_SUCCESS (to stderr), and a short form for details."""
    phases: dict[str, list[float]] = {}
    for r in rs:
        for k, v in r.delivery.phases().items():
            phases.setdefault(k, []).append(v)
    lines = [f"{name}: where the time goes (median of {len(rs)} rounds, s)"]
    lines += [f"    {k:<42}{med(v):7.2f}" for k, v in phases.items()]
    if rs and rs[0].raw:
        raw = rs[0].raw
        lines.append(f"    {'raw: archive/build/push/git/render':<42}"
                     f"{med(r.raw.archive for r in rs):.2f}/{med(r.raw.build for r in rs):.2f}/"
                     f"{med(r.raw.push for r in rs):.2f}/{med(r.raw.git for r in rs):.2f}/"
                     f"{med(r.raw.render for r in rs):.2f}")
        del raw
    log("\n".join(lines))
    inside = {k: med(v) for k, v in phases.items()
              if k.startswith("step ") or k in ("RUN_START -> first step", "between steps", "last step -> RUN_SUCCESS",
                                                "argocd_sync waiting for Synced+Healthy")}
    return ", ".join(f"{k.removeprefix('step ')} {v:.2f}" for k, v in inside.items())


def p1_figures(label: str, rs: Sequence[Round], where: str, notes: Sequence[str]) -> list[Figure]:
    deliveries = [r.delivery.delivery for r in rs]
    raws = [r.raw.total for r in rs if r.raw]
    raw_parts = (f"build {med(r.raw.build for r in rs if r.raw):.2f} + push {med(r.raw.push for r in rs if r.raw):.2f} "
                 f"+ git {med(r.raw.git for r in rs if r.raw):.2f} + render {med(r.raw.render for r in rs if r.raw):.2f}")
    common = (f"delivery (RUN_START->RUN_SUCCESS) median {med(deliveries):.2f} s "
              f"[{min(deliveries):.2f}..{max(deliveries):.2f}], raw median {med(raws):.2f} s ({raw_parts}), "
              f"{len(rs)} rounds" + (f"; {'; '.join(notes)}" if notes else ""))
    per_round = "/".join(f"{r.ratio:.2f}" for r in rs)
    overheads = "/".join(f"{r.overhead:.2f}" for r in rs)
    return [
        Figure("P1", f"delivery / raw work, {label}", med(r.ratio for r in rs), "x", 1.3, "<=",
               f"{common}; per round {per_round} x"),
        Figure("P1", f"overhead delivery - raw, {label}", med(r.overhead for r in rs), "s", 1.5, "<=",
               f"median of per-round differences ({overheads} s); in the run (medians, s): {where}"),
    ]


def tick_spacing(session: DaemonSession, since: float) -> str:
    """How often the sensor really ticked since ``since`` (its interval is a minimum, checked every 5 s)."""
    stamps = sorted(t.timestamp for t in session.ticks(after=since))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    if not gaps:
        return ""
    return f"; ticks observed every {med(gaps):.1f} s (median; {min(gaps):.1f}..{max(gaps):.1f}) over {len(stamps)} ticks"


def p2_figures(mode: str, rs: Sequence[Round], target: float, interval: int | None, extra: str = "") -> list[Figure]:
    starts = [r.delivery.to_start for r in rs]
    created = [r.delivery.to_created for r in rs]
    ticks = [r.delivery.tick_at - r.delivery.pushed_at for r in rs if r.delivery.tick_at is not None]
    boot = [r.delivery.start - r.delivery.starting for r in rs if r.delivery.starting is not None]
    queue = [r.delivery.starting - r.delivery.created for r in rs if r.delivery.starting is not None]
    detail = (f"{len(rs)} pushes; sensor interval {interval if interval is not None else '?'} s{extra}; "
              + (f"push->sensor tick median {med(ticks):.2f} s, " if ticks else "")
              + f"created->RUN_STARTING (queue) {med(queue):.2f} s, "
              f"RUN_STARTING->RUN_START (worker boot) {med(boot):.2f} s")
    return [
        Figure("P2", f"push -> run started (RUN_START), {mode}, median", med(starts), "s", target, "<=", detail),
        Figure("P2", f"push -> run started (RUN_START), {mode}, max", mx(starts), "s", target, "<=",
               f"{len(rs)} pushes, each delivered before the next"),
        Figure("P2", f"push -> run created, {mode}, median", med(created), "s", None, "",
               f"max {mx(created):.2f} s"),
    ]


def p3_figure(mode: str, rs: Sequence[Round]) -> Figure:
    synced = [r.delivery.to_synced for r in rs]
    delivery = med(r.delivery.delivery for r in rs)
    missing = sum(1 for s in synced if s is None)
    per_round = sum(1 for r in rs if r.delivery.to_synced is not None
                    and r.delivery.to_synced <= r.delivery.delivery + 3)
    return Figure("P3", f"push -> Argo CD Synced+Healthy at the manifest commit, {mode}", med(synced), "s",
                  round(delivery + 3, 2), "<=",
                  f"target = this session's P1 delivery median {delivery:.2f} s + 3 s; max {mx(synced):.2f} s; "
                  f"{per_round}/{len(rs)} rounds within their own delivery + 3 s"
                  + (f"; {missing} never seen Synced+Healthy" if missing else ""))


def idle(session: DaemonSession, stack: Stack, seconds: float, *, label: str = "",
         database_pid: int | None = None) -> list[Figure]:
    """P6: CPU of the dagster dev tree over a window with nothing pushed (the sensor ticking); with
    ``database_pid``, the database server's CPU (its process tree) in the same window too."""
    session.wait_cursor(session.repo.head(), timeout=120)
    deadline = time.monotonic() + 120
    while any(not r.is_finished for r in session.runs()):
        if time.monotonic() > deadline:
            raise BenchError("runs still in progress 120 s after the last delivery")
        time.sleep(1)
    time.sleep(2)  # let the last run's worker exit
    log(f"{session.name}: P6 idle window of {seconds:.0f} s")
    assert session.service is not None
    side0, _ = ds.tree_cpu_seconds(stack.service_pids())
    database0, _ = ds.tree_cpu_seconds([database_pid] if database_pid else [])
    window = ds.TreeCpuWindow.measure(session.service.pid, seconds)
    side1, _ = ds.tree_cpu_seconds(stack.service_pids())
    database1, _ = ds.tree_cpu_seconds([database_pid] if database_pid else [])
    t0, t1, wall, used, roles = window.t0, window.t1, window.wall, window.used, window.roles()
    procs0, procs1 = window.processes
    workers = window.workers
    in_workers = sum(workers.values())
    ticks = session.ticks(after=t0, before=t1)
    runs = [r for r in session.inst.get_run_records() if t0 <= ds._timestamp(r.create_timestamp) <= t1]
    jobs = sorted({r.dagster_run.job_name for r in runs})
    interval = session.sensor_interval()
    log(f"{session.name}: idle {used:.2f} CPU s over {wall:.1f} s ({100 * used / wall:.2f} % of a core), "
        f"{len(ticks)} ticks, {len(runs)} runs {jobs}; by process: {roles}; git daemon + registry {side1 - side0:.2f} s")
    database = (f"; the PostgreSQL server meanwhile {database1 - database0:.2f} CPU s "
                f"({100 * (database1 - database0) / wall:.2f} % of a core)" if database_pid else "")
    return [
        Figure("P6", f"idle CPU of the dagster dev tree (webserver, daemon, code servers), % of one core{label}",
               100 * used / wall, "%", 3.0, "<",
               f"{used:.2f} CPU s (utime+stime, reaped children included) over {wall:.0f} s: {roles} "
               f"({procs0}->{procs1} processes); runs in the window: {len(runs)}{' ' + ', '.join(jobs) if jobs else ''}"
               + (f" (their workers ~{in_workers:.2f} CPU s; without them {100 * (used - in_workers) / wall:.2f} %)"
                  if workers else "") + "; not counted: "
               f"git daemon + registry {side1 - side0:.2f} CPU s, the Argo CD double{database}"),
        Figure("P6", f"sensor ticks in the idle window{label}", float(len(ticks)), "ticks", None, "",
               f"{wall:.0f} s window, sensor interval {interval if interval is not None else '?'} s"
               + (f", one tick every {wall / len(ticks):.1f} s" if ticks else "")),
    ]


# The floor is measured after a pause, as P6 is: the daemon's threads and first loops have started.
FLOOR_SETTLE_SECONDS = 20.0


def idle_floor(stack: Stack, seconds: float, pipeline: Figure | None) -> list[Figure]:
    """P6's floor: the same ``dagster dev`` and dagster.yaml with a code location that defines nothing
    (benchmarks/empty_location.py), over a window as long as P6's; and what the pipeline adds to it."""
    workdir = stack.tmp / "floor"
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ds.REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    (workdir / "workspace.yaml").write_text(
        "load_from:\n"
        f"  - python_file: {{relative_path: {json.dumps(str(Path(__file__).with_name('empty_location.py')))}, "
        "location_name: empty}\n")
    port, log_path = services.free_port(), workdir / "dagster.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COELHO_", "DAGSTER_"))}
    log(f"floor: starting dagster dev on 127.0.0.1:{port} with an empty code location")
    service = services.start_dagster_dev(project_dir=workdir, env={**env, "DAGSTER_HOME": str(home)}, port=port,
                                         log_path=log_path)
    try:
        ds.wait_location_loaded(port, "floor", log_path)
        time.sleep(FLOOR_SETTLE_SECONDS)
        log(f"floor: idle window of {seconds:.0f} s")
        window = ds.TreeCpuWindow.measure(service.pid, seconds)
    finally:
        service.stop(timeout=30)
    log(f"floor: idle {window.used:.2f} CPU s over {window.wall:.1f} s ({window.percent:.2f} % of a core); "
        f"by process: {window.roles()}")
    figures = [Figure("P6", "floor: idle CPU of the same dagster dev and dagster.yaml with an empty code location, "
                            "% of one core", window.percent, "%", None, "",
                      f"{window.used:.2f} CPU s over {window.wall:.0f} s: {window.roles()} "
                      f"({window.processes[0]}->{window.processes[1]} processes); Dagster's idle cost with this "
                      "dagster.yaml (no sensor, schedule or job), measured after the pipeline's window")]
    if pipeline is not None and not math.isnan(pipeline.value):
        figures.append(Figure("P6", "idle CPU the pipeline adds to the floor, % of one core",
                              pipeline.value - window.percent, "%", None, "",
                              f"{pipeline.value:.2f} % (P6) - {window.percent:.2f} % (floor): its sensor ticks, "
                              "schedules, a larger code location, the runs in P6's window"))
    return figures


def burst(session: DaemonSession, stack: Stack, pushes: int, seconds: float) -> list[Figure]:
    """P5: ``pushes`` pushes in ``seconds`` s, each changing apps/fastapi/main.py; then what came of them."""
    repo = session.repo
    session.wait_cursor(repo.head(), timeout=120)
    base = repo.head()
    started = time.time()
    since = datetime.fromtimestamp(started, tz=UTC)
    tag = uuid.uuid4().hex[:6]
    log(f"{session.name}: P5 burst of {pushes} pushes in {seconds:g} s")
    shas: list[str] = []
    t0 = time.monotonic()
    last_push = started
    for i in range(pushes):
        wait = t0 + i * seconds / pushes - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sha, last_push = push_change(repo, {"apps/fastapi/main.py": f"print('burst {tag} {i + 1}')\n"},
                                     f"FastAPI: burst {i + 1}/{pushes} ({tag})")
        shas.append(sha)
    span = time.monotonic() - t0
    newest = shas[-1]
    log(f"{session.name}: {pushes} pushes in {span:.1f} s; waiting for the deliveries to settle")

    deadline = time.monotonic() + 600
    settled = False
    stalled_since = None
    while time.monotonic() < deadline:
        head = repo.head()
        runs = session.runs(job_name="deliver_commit", created_after=since)
        pending = [r for r in runs if not r.is_finished]
        quiet = not pending and session.sensor_cursor() == head
        if quiet and values_tag(repo, head) == newest:
            settled = True
            break
        if quiet:  # nothing running, the sensor has seen the head, and the newest is not delivered
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 60:
                break
        else:
            stalled_since = None
        time.sleep(1)
    head = repo.head()
    runs = session.runs(job_name="deliver_commit", created_after=since)
    bad = [r for r in runs if r.is_finished and r.status != ds.dg.DagsterRunStatus.SUCCESS]
    log_lines = services.git("log", "--format=%H%x09%ae%x09%s", f"{base}..{head}", cwd=repo.bare).splitlines()
    manifests = [line.split("\t") for line in log_lines if line.split("\t")[2].startswith(ds.PIPELINE_SUBJECT)]
    newest_manifest = next((m[0] for m in manifests if m[2].startswith(f"{ds.PIPELINE_SUBJECT}{newest}")), None)
    synced = session.wait_synced(newest_manifest, since_wall=started, timeout=30) if newest_manifest else None
    final_tag = values_tag(repo, head)
    on_branch = all(subprocess_ok(["merge-base", "--is-ancestor", s, head], repo) for s in shas)
    assert session.double is not None
    live = session.double.live_images().get("coelho-realtime-fastapi", "")
    want_live = f"{stack.prefix}/fastapi:{newest}"
    deployed = settled and final_tag == newest and on_branch and live == want_live
    failures = "; ".join(f"{r.run_id[:8]} {r.status.value}" for r in bad)
    log(f"{session.name}: burst: {len(manifests)} manifest commits, {len(runs)} runs, {len(bad)} failed, final tag "
        f"{final_tag[:12]} (newest {newest[:12]}), live {live}")
    return [
        Figure("P5", f"burst of {pushes} pushes in {span:.0f} s: manifest commits made", float(len(manifests)),
               "commits", 3, "<=", f"{len(runs)} deliver_commit runs; commits {', '.join(m[0][:8] for m in manifests)}"),
        Figure("P5", "burst: deliver_commit runs", float(len(runs)), "runs", None, "",
               f"sources delivered: {', '.join(r.tags.get(ds.SHA_TAG, '?')[:8] for r in reversed(runs))}"),
        Figure("P5", "burst: failed runs", float(len(bad)), "runs", 0, "==", failures or "none"),
        Figure("P5", "burst: last push -> Synced+Healthy at the newest commit's manifest commit",
               (synced - last_push) if synced else NAN, "s", None, "",
               f"manifest commit {newest_manifest[:12] if newest_manifest else 'none'}"
               + ("" if synced else "; never seen Synced+Healthy")),
        Figure("P5", "burst: newest commit deployed, no change lost", 1.0 if deployed else 0.0, "yes", 1, "==",
               f"final values.yaml fastapi tag {'= newest SHA' if final_tag == newest else final_tag[:12] + ' != newest ' + newest[:12]}; "
               f"all {len(shas)} pushed commits on the branch: {'yes' if on_branch else 'no'}; live image "
               f"{'= newest' if live == want_live else repr(live)}" + ("" if settled else "; did not settle in time")),
    ]


def subprocess_ok(args: Sequence[str], repo: SourceRepo) -> bool:
    try:
        services.git(*args, cwd=repo.bare)
        return True
    except services.ServiceError:
        return False


# -- the run -------------------------------------------------------------------------------------

def _trivial_change(tag: str) -> Callable[[int], dict[str, str]]:
    return lambda i: {"apps/fastapi/main.py": f"print('daemon round {tag} {i}')\n"}


def _session_error(session: DaemonSession | None, e: BaseException) -> None:
    log(f"ERROR: {e}\n{traceback.format_exc()}")
    if session is not None and session.service is not None:
        log(f"last lines of {session.dir / 'dagster.log'}:\n{session.log_tail()}")


def run(options: argparse.Namespace | None = None) -> list[Figure]:
    """Every daemon-side figure; ``options`` as parser() makes them (missing attributes take defaults)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process this run started.
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(resolve(options))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(opts: Options) -> list[Figure]:
    log(f"parts {sorted(opts.parts)}, {opts.rounds} rounds, idle {opts.idle_seconds:g} s, growth {opts.growth_sizes}")
    started = time.monotonic()
    figures: list[Figure] = []
    overheads: dict[int, float] = {}
    growth_detail: dict[int, str] = {}
    want_rounds = opts.wants("P1", "P2", "P3") or ("growth" in opts.parts and 3 in opts.growth_sizes)
    with Stack(keep=opts.keep) as stack:
        assert stack.git is not None
        # -- trivial: P1, P2 polling, P3 polling, growth(3), P6, P5 --------------------------------------
        if want_rounds or opts.wants("P5", "P6"):
            session = None
            try:
                repo = make_source_repo(stack.git)
                with DaemonSession(stack, "trivial", repo, apps=APPS, verify_soak=opts.verify_soak) as session:
                    seed(session, timeout=600)
                    if want_rounds:
                        raw = make_raw(stack, repo, "trivial") if opts.wants("P1", "growth") else None
                        if raw:
                            raw.round(repo.head(), "raw-warmup-trivial")
                        interval = session.sensor_interval()
                        notes: list[str] = []
                        rounds_from = time.time()
                        rs = rounds(session, opts.rounds, _trivial_change(uuid.uuid4().hex[:6]), raw=raw,
                                    jitter=float(interval or 5), expect={"fastapi"}, notes=notes)
                        spacing = tick_spacing(session, rounds_from)
                        where = phase_summary("trivial", rs)
                        if "P1" in opts.parts:
                            figures += p1_figures("trivial image (tests/fixtures/apps)", rs, where, notes)
                        if "P2" in opts.parts:
                            figures += p2_figures("polling", rs, 6.0, interval,
                                                  f"{spacing}; each push at a random phase of the interval")
                        if "P3" in opts.parts:
                            figures.append(p3_figure("polling", rs))
                        if raw:
                            overheads[3] = med(r.overhead for r in rs)
                            growth_detail[3] = (f"{len(rs)} rounds ({'/'.join(f'{r.overhead:.2f}' for r in rs)} s), "
                                                f"the trivial session's P1 rounds")
                    if "P6" in opts.parts:
                        try:
                            figures += idle(session, stack, opts.idle_seconds)
                        except Exception as e:  # noqa: BLE001 - one part failing does not stop the others
                            _session_error(session, e)
                            figures.append(failed("P6", "idle CPU of the dagster dev tree, % of one core", "%", e, 3.0, "<"))
                    if "P5" in opts.parts:
                        try:
                            figures += burst(session, stack, opts.burst_pushes, opts.burst_seconds)
                        except Exception as e:  # noqa: BLE001
                            _session_error(session, e)
                            figures.append(failed("P5", "burst", "", e))
            except Exception as e:  # noqa: BLE001
                _session_error(session, e)
                for part, label, unit in (("P1", "delivery / raw work, trivial image", "x"),
                                          ("P2", "push -> run started, polling", "s"),
                                          ("P3", "push -> Synced+Healthy, polling", "s"),
                                          ("P6", "idle CPU, % of one core", "%"), ("P5", "burst", "")):
                    if part in opts.parts and not any(f.id == part for f in figures):
                        figures.append(failed(part, label, unit, e))

        # -- P6's floor: Dagster alone, after the trivial session has stopped ---------------------------------
        if "P6" in opts.parts:
            pipeline_idle = next((f for f in figures if f.id == "P6" and f.unit == "%"), None)
            try:
                figures += idle_floor(stack, opts.idle_seconds, pipeline_idle)
            except Exception as e:  # noqa: BLE001
                log(f"floor: {type(e).__name__}: {e}")
                figures.append(failed("P6", "floor: idle CPU with an empty code location, % of one core", "%", e))

        # -- real FastAPI image: P1 ---------------------------------------------------------------------
        if "P1-real" in opts.parts:
            session = None
            try:
                repo = make_source_repo(stack.git, real_apps=True)
                init = repo.clone / "apps" / "fastapi" / "app" / "__init__.py"
                base_text = init.read_text()
                with DaemonSession(stack, "real", repo, apps=APPS, verify_soak=opts.verify_soak) as session:
                    seed(session, timeout=1700)  # pip and npm inside the builds, from the network
                    raw = make_raw(stack, repo, "real", member="app/__init__.py")
                    raw.round(repo.head(), "raw-warmup-real")
                    tag = uuid.uuid4().hex[:6]
                    notes = []
                    rs = rounds(session, opts.rounds,
                                lambda i: {"apps/fastapi/app/__init__.py": base_text + f"# benchmark {tag} {i}\n"},
                                raw=raw, jitter=float(session.sensor_interval() or 5), expect={"fastapi"}, notes=notes)
                    where = phase_summary("real", rs)
                    figures += p1_figures("real FastAPI image (apps/fastapi, source change)", rs, where, notes)
            except Exception as e:  # noqa: BLE001
                _session_error(session, e)
                figures.append(failed("P1", "delivery / raw work, real FastAPI image", "x", e, 1.3, "<="))

        # -- the cluster's storage: P1 on PostgreSQL ------------------------------------------------------
        if "P1-postgres" in opts.parts:
            figures += postgres_sessions(stack, opts)

        # -- the run launcher: P1 with the warm launcher and with Dagster's default -----------------------
        if "P1-launcher" in opts.parts:
            figures += launcher_sessions(stack, opts)

        # -- webhook: P2, P3 ----------------------------------------------------------------------------
        if "P2-webhook" in opts.parts:
            session = None
            webhook = None
            try:
                repo = make_source_repo(stack.git)
                ok, help_text = Webhook.available(os.environ)
                if not ok:
                    log(f"webhook: `coelho webhook` is not available: {help_text}")
                    figures.append(unavailable("P2", "push -> run started (RUN_START), webhook", "s",
                                               f"`python -m coelho_pipeline.cli webhook` fails: {help_text[:160]}"))
                else:
                    with DaemonSession(stack, "webhook", repo, apps=APPS, verify_soak=opts.verify_soak,
                                       env={"COELHO_POLL_INTERVAL_SECONDS": "600"}) as session:
                        webhook = Webhook(session)
                        webhook.start(help_text)
                        head = repo.head()
                        webhook.post(repo.branch, "0" * 40, head)  # the first tick may already be on its way
                        # The webhook launches runs without moving the cursor; with polling off it stays at the seed.
                        seed(session, timeout=600, polling=False)
                        interval = session.sensor_interval()
                        notes = []
                        rs = rounds(session, opts.rounds, _trivial_change(uuid.uuid4().hex[:6]), raw=None,
                                    jitter=1.0, webhook=webhook, notes=notes)
                        phase_summary("webhook", rs)
                        extra = "; a GitLab push event posted right after each push" + "".join(f"; {n}" for n in notes)
                        if interval is not None and interval < 600:
                            extra += " (**COELHO_POLL_INTERVAL_SECONDS=600 did not take effect**)"
                        figures += p2_figures("webhook", rs, 2.0, interval, extra)
                        if "P3" in opts.parts:
                            figures.append(p3_figure("webhook", rs))
            except Exception as e:  # noqa: BLE001
                _session_error(session, e)
                if webhook is not None:
                    log(f"webhook log:\n{webhook.log_tail()}")
                figures.append(failed("P2", "push -> run started (RUN_START), webhook", "s", e, 2.0, "<="))
            finally:
                if webhook is not None:
                    webhook.stop()

        # -- growth: 10, 30 apps --------------------------------------------------------------------------
        if "growth" in opts.parts:
            for size in (s for s in opts.growth_sizes if s != 3 or 3 not in overheads):
                session = None
                try:
                    names = extra_app_names(size)
                    repo = make_source_repo(stack.git, values_rewrite=extra_apps_rewrite(names))
                    apps = (*APPS, *names)
                    image_values = extra_image_values(names)
                    with DaemonSession(stack, f"growth{size}", repo, apps=apps, image_values=image_values,
                                       verify_soak=opts.verify_soak) as session:
                        seed(session, timeout=1200)
                        raw = make_raw(stack, repo, f"growth{size}")
                        raw.round(repo.head(), f"raw-warmup-growth{size}")
                        notes = []
                        rs = rounds(session, opts.rounds, _trivial_change(uuid.uuid4().hex[:6]), raw=raw,
                                    jitter=float(session.sensor_interval() or 5), expect={"fastapi"}, notes=notes)
                        where = phase_summary(f"growth{size}", rs)
                        overheads[size] = med(r.overhead for r in rs)
                        growth_detail[size] = (f"{len(rs)} rounds ({'/'.join(f'{r.overhead:.2f}' for r in rs)} s); "
                                               f"delivery {med(r.delivery.delivery for r in rs):.2f} s, "
                                               f"raw {med(r.raw.total for r in rs if r.raw):.2f} s; {where}"
                                               + (f"; {'; '.join(notes)}" if notes else ""))
                except Exception as e:  # noqa: BLE001
                    _session_error(session, e)
                    overheads[size] = NAN
                    growth_detail[size] = f"FAILED: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
            for size in opts.growth_sizes:
                if size in overheads:
                    figures.append(Figure("growth", f"P1 overhead (delivery - raw), {size} apps, one changed",
                                          overheads[size], "s", None, "", growth_detail.get(size, "")))
            big = max(opts.growth_sizes)
            if big != 3 and 3 in overheads and big in overheads:
                figures.append(Figure("growth", f"overhead({big} apps) / overhead(3 apps)",
                                      overheads[big] / overheads[3] if overheads[3] else NAN, "x", 1.5, "<=",
                                      f"{overheads[big]:.2f} s / {overheads[3]:.2f} s (flat: the catalog's size "
                                      "should not cost a one-app change)"))
    log(f"done in {time.monotonic() - started:.0f} s")
    return figures


def postgres_sessions(stack: Stack, opts: Options) -> list[Figure]:
    """P1 on the cluster's instance (k3d/dagster/dagster.yaml: PostgreSQL with password authentication,
    a private server started here), in two sessions of this run: DeliveryInstance keeping its database
    connections (the default), then ``keep_database_connections: false`` (Dagster's own behaviour, a
    connection per storage call). Connections made are counted by the server (pg_stat_database)."""
    from cluster_harness import cluster_instance
    from postgres_server import start_postgres

    figures: list[Figure] = []
    overheads: dict[bool, float] = {}
    server = start_postgres(services.free_port())
    try:
        for keep in (True, False):
            name = "pg-kept" if keep else "pg-per-call"
            what = "kept connections" if keep else "a connection per call"
            label = f"trivial image, cluster storage (PostgreSQL), {what}"
            session = None
            try:
                db, password = f"coelho_{name.replace('-', '_')}", uuid.uuid4().hex
                server.create_database(db, owner=db, password=password)
                env = {"DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port),
                       "DAGSTER_PG_USERNAME": db, "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": db}
                config = {**cluster_instance(stack.tmp / f"{name}-instance", run_launcher=False),
                          "keep_database_connections": keep}
                repo = make_source_repo(stack.git)
                with DaemonSession(stack, name, repo, apps=APPS, env=env, instance_config=config,
                                   verify_soak=opts.verify_soak) as session:
                    seed(session, timeout=600)
                    raw = make_raw(stack, repo, name)
                    raw.round(repo.head(), f"raw-warmup-{name}")
                    notes: list[str] = []
                    before, since = server.connections_made(db), time.monotonic()
                    rs = rounds(session, opts.rounds, _trivial_change(uuid.uuid4().hex[:6]), raw=raw,
                                jitter=float(session.sensor_interval() or 5), expect={"fastapi"}, notes=notes)
                    made, window = server.connections_made(db) - before, time.monotonic() - since
                    where = phase_summary(name, rs)
                    overheads[keep] = med(r.overhead for r in rs)
                    idle_before = server.connections_made(db)
                    idle_figures = idle(session, stack, opts.postgres_idle_seconds, label=f", PostgreSQL, {what}",
                                        database_pid=server.service.pid)
                    idle_figures[0] = dataclasses.replace(
                        idle_figures[0], detail=f"{idle_figures[0].detail}; connections made to the database "
                                                f"meanwhile (with the wait for the last run): "
                                                f"{server.connections_made(db) - idle_before}")
                    connections = (f"push -> RUN_START median {med(r.delivery.to_start for r in rs):.2f} s; "
                                   f"connections made to the database while the rounds ran (dagster dev's "
                                   f"processes and the runs): {made} in {window:.0f} s, {made / len(rs):.0f} a round")
                    if keep:
                        figures += p1_figures(label, rs, where, [*notes, connections])
                    else:
                        figures.append(Figure("P1", f"overhead delivery - raw, {label} (Dagster's own)",
                                              overheads[keep], "s", None, "",
                                              f"{len(rs)} rounds ({'/'.join(f'{r.overhead:.2f}' for r in rs)} s); "
                                              f"delivery {med(r.delivery.delivery for r in rs):.2f} s; in the run: "
                                              f"{where}; {connections}"))
                    figures += idle_figures[:1]
            except Exception as e:  # noqa: BLE001 - the other session still runs
                _session_error(session, e)
                figures.append(failed("P1", f"overhead delivery - raw, {label}", "s", e))
    finally:
        server.stop()
    if len(overheads) == 2:
        figures.append(Figure("P1", "PostgreSQL: overhead saved by kept connections", overheads[False] - overheads[True],
                              "s", None, "", f"{overheads[False]:.2f} s (a connection per call) - "
                                             f"{overheads[True]:.2f} s (kept), same run"))
    return figures


def launcher_sessions(stack: Stack, opts: Options) -> list[Figure]:
    """The trivial rounds with dagster.yaml as shipped (WarmRunLauncher) and with Dagster's default run
    launcher (dagster.yaml without ``run_launcher``), one session each in this run."""
    import yaml

    shipped = yaml.safe_load((ds.REPO_ROOT / "dagster.yaml").read_text())
    figures: list[Figure] = []
    overheads: dict[bool, float] = {}
    starts: dict[bool, float] = {}
    for warm in (True, False):
        name = "warm-launcher" if warm else "default-launcher"
        what = "runs forked from the warm process" if warm else "Dagster's default launcher (a new interpreter per run)"
        session = None
        try:
            config = shipped if warm else {k: v for k, v in shipped.items() if k != "run_launcher"}
            repo = make_source_repo(stack.git)
            with DaemonSession(stack, name, repo, apps=APPS, instance_config=config,
                               verify_soak=opts.verify_soak) as session:
                seed(session, timeout=600)
                raw = make_raw(stack, repo, name)
                raw.round(repo.head(), f"raw-warmup-{name}")
                notes: list[str] = []
                rs = rounds(session, opts.rounds, _trivial_change(uuid.uuid4().hex[:6]), raw=raw,
                            jitter=float(session.sensor_interval() or 5), expect={"fastapi"}, notes=notes)
                where = phase_summary(name, rs)
            overheads[warm] = med(r.overhead for r in rs)
            boot = [r.delivery.start - r.delivery.starting for r in rs if r.delivery.starting is not None]
            figures.append(Figure("P1", f"overhead delivery - raw, trivial image, {what}", overheads[warm], "s",
                                  1.5 if warm else None, "<=" if warm else "",
                                  f"{len(rs)} rounds ({'/'.join(f'{r.overhead:.2f}' for r in rs)} s); delivery "
                                  f"{med(r.delivery.delivery for r in rs):.2f} s, raw {med(r.raw.total for r in rs if r.raw):.2f} s; "
                                  f"push -> RUN_START {med(r.delivery.to_start for r in rs):.2f} s; in the run: {where}"
                                  + (f"; {'; '.join(notes)}" if notes else "")))
            starts[warm] = med(boot)
            figures.append(Figure("P1", f"run start (RUN_STARTING -> RUN_START), {what}", med(boot), "s", None, "",
                                  f"median of {len(boot)} ({'/'.join(f'{b:.2f}' for b in boot)} s)"))
        except Exception as e:  # noqa: BLE001 - the other session still runs
            _session_error(session, e)
            figures.append(failed("P1", f"overhead delivery - raw, trivial image, {what}", "s", e))
    if len(overheads) == 2:
        figures.append(Figure("P1", "overhead saved by the warm launcher", overheads[False] - overheads[True], "s",
                              None, "", f"{overheads[False]:.2f} s (Dagster's default) - {overheads[True]:.2f} s "
                                        f"(warm), same run; the run's start is not in it"))
    if len(overheads) == 2 and len(starts) == 2:
        # What the launcher changes is mostly the run's start, which RUN_START -> RUN_SUCCESS leaves out.
        default, warm_total = starts[False] + overheads[False], starts[True] + overheads[True]
        figures.append(Figure("P1", "run start + overhead saved by the warm launcher", default - warm_total, "s",
                              None, "", f"{default:.2f} s (Dagster's default: start {starts[False]:.2f} + "
                                        f"{overheads[False]:.2f}) - {warm_total:.2f} s (warm: start "
                                        f"{starts[True]:.2f} + {overheads[True]:.2f}), same run"))
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    options = parser().parse_args(argv)
    resolve(options, strict=True)  # a mistyped part name stops here, not after twenty minutes
    figures = run(options)
    print(table(figures))


if __name__ == "__main__":
    main()
