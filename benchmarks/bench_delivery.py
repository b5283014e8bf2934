"""Time delivering a one-app change through deliver_commit against the raw work it stands for.

    .venv/bin/python benchmarks/bench_delivery.py [--rounds N] [--apps N]

Starts its own registry and git daemon on free 127.0.0.1 ports, seeds a source repository the
way the tests do (tests/fixtures/apps + this repo's k3d/), delivers the seed commit once (all
three images), then for each round pushes a change to apps/fastapi/main.py and times
``deliver_commit`` in process for it (the harness's Pipeline.deliver), taking per-step durations
from the run's event log. In the same round it does the same work directly, without Dagster:
docker SDK build + push of that app's context, git fetch/edit/commit/push of one values.yaml
line (git CLI), and one render_chart of k3d/helm. ``--apps N`` adds the growth figures' extra apps
(benchmarks/extra_apps.py) so the catalog has N, still one changed a round. Needs a Docker engine on the default socket
(or DOCKER_HOST) and the local base images (scripts/base-images.sh). Dagster's own run log goes
to stderr; the figures go to stdout.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests' harness seeds the source repository and drives the job; reuse it rather than copy it.
sys.path.insert(0, str(REPO_ROOT / "tests"))

import dagster as dg  # noqa: E402
import docker  # noqa: E402
from conftest import BASE_IMAGES, GitServer  # noqa: E402
from extra_apps import extra_app_names, extra_apps_rewrite  # noqa: E402
from pipeline_harness import APPS, DEV, Pipeline, SourceRepo, make_source_repo, materializations, settings_for  # noqa: E402

from coelho_pipeline.chart import argocd_helm_overrides, render_chart  # noqa: E402
from coelho_pipeline.dev import services  # noqa: E402

STEPS = ("source_commit", "images", "helm_values", "manifest_commit", "argocd_sync")
RAW_BRANCH = "bench-raw"  # the raw git work writes here, so it never moves the branch the pipeline delivers


@dataclass
class PipelineRound:
    wall: float  # deliver(): partition registration + execute_in_process, as the caller sees it
    run: float  # RUN_START -> RUN_SUCCESS in the event log
    steps: dict[str, float]  # step key -> STEP_START -> STEP_SUCCESS


@dataclass
class RawRound:
    archive: float
    build: float
    push: float
    git: float
    render: float

    @property
    def image(self) -> float:
        return self.archive + self.build + self.push

    @property
    def total(self) -> float:
        return self.image + self.git + self.render


@dataclass
class RawWork:
    """The delivery's work done by hand: what deliver_commit would cost with no orchestration at all."""

    api: docker.APIClient
    source: SourceRepo
    clone: Path  # a work clone of the bench remote, on RAW_BRANCH
    repository: str  # <registry prefix>/fastapi
    build_args: Mapping[str, str]
    overrides: dict[str, Any] = field(default_factory=dict)
    pushed: list[str] = field(default_factory=list)
    # The file the raw build changes (the real FastAPI's sources live in app/, the fixture's at the root).
    member: str = "main.py"

    def image(self, sha: str, label: str) -> tuple[float, float, float]:
        """git archive of apps/fastapi at ``sha``, docker build, push as ``:<label>``: (archive, build, push) s."""
        t0 = time.perf_counter()
        # The pipeline has just built this very context: an identical tar would be a layer-cache hit,
        # so the raw build changes main.py's text too, making its COPY layer as new as the pipeline's.
        context = changed_context(self.source.bare, sha, "apps/fastapi", self.member, f"print('raw {label}')\n")
        t1 = time.perf_counter()
        ref = f"{self.repository}:{label}"
        build(self.api, context, ref, self.build_args)
        t2 = time.perf_counter()
        push(self.api, self.repository, label)
        t3 = time.perf_counter()
        self.pushed.append(ref)
        return t1 - t0, t2 - t1, t3 - t2

    def commit_tag(self, tag: str) -> tuple[float, str]:
        """fetch + edit fastapi's tag line + commit + push, with the git CLI: (seconds, new values text)."""
        t0 = time.perf_counter()
        services.git("fetch", "-q", "origin", RAW_BRANCH, cwd=self.clone)
        services.git("merge", "-q", "--ff-only", "FETCH_HEAD", cwd=self.clone)
        values = self.clone / "k3d" / "helm" / "values.yaml"
        text = _set_tag_line(values.read_text(), f"{self.repository}\n", tag)
        values.write_text(text)
        services.git("commit", "-q", "-am", f"Update fastapi tag to {tag}", cwd=self.clone, env=DEV)
        services.git("push", "-q", "origin", f"HEAD:refs/heads/{RAW_BRANCH}", cwd=self.clone)
        return time.perf_counter() - t0, text

    def render(self, values_text: str) -> float:
        """One bare render_chart of k3d/helm with these values and the Application's parameters."""
        t0 = time.perf_counter()
        render_chart(self.clone / "k3d" / "helm", values_text, overrides=self.overrides)
        return time.perf_counter() - t0

    def round(self, sha: str, label: str) -> RawRound:
        archive, build, push = self.image(sha, label)
        git_s, text = self.commit_tag(label)
        return RawRound(archive, build, push, git_s, self.render(text))


def start_registry_and_source(tmp: Path, started: list[services.Service],
                              extra_apps: Sequence[str] = ()) -> tuple[str, SourceRepo]:
    """A registry and a git daemon on free ports (appended to ``started``, for the caller to stop) and
    the fixture's source repository on it: (registry prefix, repository)."""
    port = services.free_port()
    started.append(services.start_registry(tmp / "registry", port))
    git_port = services.free_port()
    started.append(services.start_git_daemon(tmp / "git", git_port))
    rewrite = extra_apps_rewrite(extra_apps) if extra_apps else None
    return f"127.0.0.1:{port}/coelho", make_source_repo(GitServer(tmp / "git", git_port), values_rewrite=rewrite)


def changed_context(bare: Path, sha: str, context_path: str, member: str, text: str) -> bytes:
    """``git archive`` of ``context_path`` at ``sha``, with ``member``'s text replaced (a new COPY layer)."""
    archive = subprocess.run(["git", "archive", "--format=tar", f"{sha}:{context_path}"], cwd=bare,
                             capture_output=True, check=True).stdout
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for entry in src.getmembers():
            payload = src.extractfile(entry) if entry.isfile() else None
            if entry.name == member:
                data = text.encode()
                entry.size, payload = len(data), io.BytesIO(data)
            dst.addfile(entry, payload)
    return out.getvalue()


def build(api: docker.APIClient, context: bytes, ref: str, build_args: Mapping[str, str]) -> None:
    for chunk in api.build(fileobj=io.BytesIO(context), custom_context=True, tag=ref, rm=True, forcerm=True,
                           decode=True, buildargs=dict(build_args), network_mode="host"):
        if "error" in chunk:
            raise RuntimeError(f"raw build of {ref} failed: {chunk['error'].strip()}")


def push(api: docker.APIClient, repository: str, tag: str) -> str:
    """Pushes ``repository:tag``; the digest the registry gave it."""
    digest = None
    for event in api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise RuntimeError(f"raw push of {repository}:{tag} failed: {event['error'].strip()}")
        digest = event.get("aux", {}).get("Digest", digest)
    if not digest:
        raise RuntimeError(f"raw push of {repository}:{tag} reported no digest")
    return digest


def _set_tag_line(text: str, repository_line_end: str, tag: str) -> str:
    """Rewrites the first ``tag:`` line after the line ending in ``repository_line_end`` (a plain line edit)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.endswith(repository_line_end))
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("tag:"):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = f'{indent}tag: "{tag}"\n'
            return "".join(lines)
    raise ValueError(f"no tag: line after {repository_line_end.strip()}")


def step_times(instance: dg.DagsterInstance, run_id: str) -> tuple[float, dict[str, float]]:
    """(RUN_START -> RUN_SUCCESS, {step key: STEP_START -> STEP_SUCCESS}) from the run's event log."""
    T = dg.DagsterEventType
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    run_start = run_end = 0.0
    for entry in instance.all_logs(run_id, of_type={T.RUN_START, T.RUN_SUCCESS, T.STEP_START, T.STEP_SUCCESS}):
        event = entry.dagster_event
        assert event is not None
        if event.event_type == T.RUN_START:
            run_start = entry.timestamp
        elif event.event_type == T.RUN_SUCCESS:
            run_end = entry.timestamp
        elif event.event_type == T.STEP_START:
            starts[event.step_key] = entry.timestamp
        else:
            steps[event.step_key] = entry.timestamp - starts[event.step_key]
    return run_end - run_start, steps


def deliver(pipeline: Pipeline, sha: str, *, expect_rebuilt: set[str]) -> tuple[PipelineRound, list[str]]:
    """Times one delivery; returns its figures and the image refs it pushed."""
    t0 = time.perf_counter()
    result = pipeline.deliver(sha, raise_on_error=True)
    wall = time.perf_counter() - t0
    mats = materializations(result)
    rebuilt = {k.split("/", 1)[1] for k, md in mats.items() if k.startswith("image/") and md["rebuilt"]}
    # A figure is only about a one-app change if exactly that app was built and a commit was made.
    if rebuilt != expect_rebuilt or not mats["manifest_commit"]["created"]:
        raise RuntimeError(f"delivery of {sha} rebuilt {sorted(rebuilt)}, manifest {mats['manifest_commit']}")
    run, steps = step_times(pipeline.instance, result.run_id)
    refs = [md["image"] for k, md in mats.items() if k.startswith("image/") and md["rebuilt"]]
    return PipelineRound(wall, run, steps), refs


def table(pipe: Sequence[PipelineRound], raw: Sequence[RawRound], apps: int) -> str:
    """The figures: medians and minima, pipeline against raw, per step and in total."""
    def med(xs: Iterable[float]) -> float:
        return statistics.median(list(xs))

    def row(label: str, p: Callable[[PipelineRound], float] | None, r: Callable[[RawRound], float] | None,
            raw_label: str) -> str:
        cells = []
        for agg in (med, min):
            pv = agg(p(x) for x in pipe) if p else None
            rv = agg(r(x) for x in raw) if r else None
            cells += [f"{pv * 1000:8.0f}" if pv is not None else f"{'-':>8}",
                      f"{rv * 1000:8.0f}" if rv is not None else f"{'-':>8}",
                      f"{pv / rv:6.1f}x" if pv is not None and rv else f"{'-':>7}"]
        return f"{label:<26}{' '.join(cells[:3])}  |{' '.join(cells[3:])}   {raw_label}".rstrip()

    def step(key: str) -> Callable[[PipelineRound], float]:
        return lambda x: x.steps.get(key, 0.0)

    def in_steps(x: PipelineRound) -> float:
        return sum(x.steps.values())

    lines = [
        f"delivering a one-app change (apps/fastapi/main.py), {apps} apps, {len(pipe)} rounds, times in ms",
        f"{'':<26}{' median ':-^25}  |{' min (ratio: min/min) ':-^25}",
        f"{'':<26}{'pipeline':>8} {'raw':>8} {'ratio':>7}  |{'pipeline':>8} {'raw':>8} {'ratio':>7}   raw counterpart",
        row("total", lambda x: x.wall, lambda x: x.total, "image + git + render below"),
        row("  source_commit", step("source_commit"), None, "(planning: fetch, diffs, registry HEADs)"),
        row("  images", step("images"), lambda x: x.image, "git archive + docker build + push"),
        row("    of which raw archive", None, lambda x: x.archive, ""),
        row("    of which raw build", None, lambda x: x.build, ""),
        row("    of which raw push", None, lambda x: x.push, ""),
        row("  helm_values", step("helm_values"), lambda x: x.render, "render_chart of k3d/helm"),
        row("  manifest_commit", step("manifest_commit"), lambda x: x.git, "git fetch+edit+commit+push (CLI)"),
        row("  argocd_sync", step("argocd_sync"), None, "(no cluster configured: returns at once)"),
        row("  sum of steps", in_steps, None, ""),
        row("  run, outside steps", lambda x: x.run - in_steps(x), None, "RUN_START..RUN_SUCCESS minus steps"),
        row("  outside the run", lambda x: x.wall - x.run, None, "execute_in_process before/after the run"),
        "",
        "per round (ms):  pipeline  raw   ratio",
    ]
    lines += [f"  round {i:<3}      {p.wall * 1000:8.0f} {r.total * 1000:5.0f} {p.wall / r.total:6.1f}x"
              for i, (p, r) in enumerate(zip(pipe, raw), 1)]
    return "\n".join(lines)


def main(rounds: int, apps: int = len(APPS)) -> None:
    if not services.engine_answers(os.environ.get("DOCKER_HOST")):
        raise SystemExit("no Docker engine answers (DOCKER_HOST or the default socket)")
    client = docker.from_env(timeout=600)
    try:
        client.images.get(BASE_IMAGES["PYTHON_IMAGE"])
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{BASE_IMAGES['PYTHON_IMAGE']} is missing: run scripts/base-images.sh") from None

    tmp = Path(tempfile.mkdtemp(prefix="coelho-bench-"))
    started: list[services.Service] = []
    pushed: list[str] = []
    raw: RawWork | None = None
    try:
        extra = extra_app_names(apps)
        prefix, repo = start_registry_and_source(tmp, started, extra)

        # The pipeline's own instance (dagster.yaml: DeliveryInstance on its sqlite storages), as
        # `dagster dev` and its runs use it, in a home of its own.
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            settings = settings_for(repo, prefix, tmp / "work", BASE_IMAGES)
            pipeline = Pipeline(repo, replace(settings, apps=(*settings.apps, *extra)), instance)
            # Warm-up, untimed: the seed builds every image, and the raw side loads helm_python,
            # opens its docker connection and pushes the base layers once, as the pipeline just did.
            _, refs = deliver(pipeline, repo.head(), expect_rebuilt={*APPS, *extra})
            pushed += refs
            # The raw side's own clone and branch, from the delivered head (its values.yaml names this
            # registry): its pushes must not move the branch the pipeline reads.
            raw_clone = tmp / "raw-clone"
            services.git("clone", "-q", repo.url, str(raw_clone), cwd=tmp)
            services.git("checkout", "-q", "-b", RAW_BRANCH, cwd=raw_clone)
            services.git("push", "-q", "origin", f"HEAD:refs/heads/{RAW_BRANCH}", cwd=raw_clone)
            application = (raw_clone / "k3d" / "argocd" / "application.yaml").read_text()
            raw = RawWork(api=client.api, source=repo, clone=raw_clone, repository=f"{prefix}/fastapi",
                          build_args=BASE_IMAGES, overrides=argocd_helm_overrides(application))
            raw.round(repo.head(), "raw-warmup")

            pipe_rounds: list[PipelineRound] = []
            raw_rounds: list[RawRound] = []
            for n in range(1, rounds + 1):
                sha = repo.push({"apps/fastapi/main.py": f"print('fastapi round {n}')\n"}, f"FastAPI: round {n}")
                figures, refs = deliver(pipeline, sha, expect_rebuilt={"fastapi"})
                pushed += refs
                pipe_rounds.append(figures)
                raw_rounds.append(raw.round(sha, f"raw-{n}"))
                print(f"round {n}: pipeline {figures.wall:.2f} s, raw {raw_rounds[-1].total:.2f} s",
                      file=sys.stderr, flush=True)
        print(table(pipe_rounds, raw_rounds, apps))
    finally:
        for service in reversed(started):
            service.stop()
        # Only the exact tags this run made are removed from the engine; nothing else is touched.
        for ref in pushed + (raw.pushed if raw else []):
            try:
                client.images.remove(ref)
            except docker.errors.APIError:
                pass
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed one-app deliveries (default 5)")
    parser.add_argument("--apps", type=int, default=len(APPS),
                        help=f"apps in the catalog, at least the fixture's {len(APPS)} (default {len(APPS)})")
    args = parser.parse_args()
    if args.apps < len(APPS):
        parser.error(f"--apps: at least the fixture's {len(APPS)}")
    main(args.rounds, args.apps)
