"""P7: one drift check against an Application with 100 Deployments, served by kmock.

    .venv/bin/python benchmarks/bench_drift.py [--quick] [--rounds N] [--sizes 10,100]

For each size N it starts, on 127.0.0.1, a git daemon holding a deploy repository whose
k3d/helm/values.yaml names N apps (``app000`` ... with an image block each) and the Argo CD
controller double of the tests (tests/argocd_double.py, kmock) serving the Application of
k3d/argocd/application.yaml pointed at that repository, plus N Deployments in coelho-realtime
running exactly the images the values file names. Then it runs the real ``drift_check`` job (the
``live_state`` asset and its ``live_matches_git`` check) in process, built by build_definitions
from Settings naming the N apps and a kubeconfig for kmock, once untimed (the git cache clone)
and ``--rounds`` times timed. Per check it takes the live_state step's time from the run's event
log and counts the requests the API server received from the pipeline's client (kmock records
every request; the double's own writes are told apart by their User-Agent). It also times the
client's two reads alone (ArgoCDClient.get + deployment_images) and its refresh_and_read.

Nothing here needs Docker. Dagster's run log goes to stderr; the figures go to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the Argo CD double of the tests, reused as it is
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg  # noqa: E402
from argocd_double import ArgoCDControllerDouble, application_from_yaml  # noqa: E402
from figures import Figure, table  # noqa: E402

from coelho_pipeline.argocd.client import ArgoCDClient  # noqa: E402
from coelho_pipeline.assets.drift import LIVE_MATCHES_GIT  # noqa: E402
from coelho_pipeline.config import Settings  # noqa: E402
from coelho_pipeline.definitions import build_definitions  # noqa: E402
from coelho_pipeline.dev import services  # noqa: E402

DEPLOY_NAMESPACE = "coelho-realtime"
RELEASE = "coelho-realtime"
APP_NAME = "coelho-realtime"
APP_NAMESPACE = "argocd"
REGISTRY = "127.0.0.1:5000/coelho"
TAG = "0123456789abcdef0123456789abcdef01234567"
TARGET_SECONDS = 2.0
FAST_POLL = 0.05  # the double's own poll interval: how soon it can have answered a refresh
# The official client's User-Agent; the double writes through kmock's own aiohttp client.
CLIENT_AGENT = "OpenAPI-Generator"


def app_names(n: int) -> list[str]:
    return [f"app{i:03d}" for i in range(n)]


def values_text(names: Sequence[str]) -> str:
    lines = ["# values.yaml of the drift benchmark: one image block per app", "environment: development", ""]
    for name in names:
        lines += [f"{name}:", "  image:", f"    repository: {REGISTRY}/{name}", f'    tag: "{TAG}"', "  replicas: 1", ""]
    return "\n".join(lines)


def deployment(name: str, image: str) -> dict[str, Any]:
    """A Deployment as the chart renders one app (labels, selector, one container), Available."""
    labels = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/name": RELEASE,
              "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{RELEASE}-{name}", "namespace": DEPLOY_NAMESPACE, "labels": labels,
                     "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {k: labels[k] for k in ("app.kubernetes.io/instance",
                                                                 "app.kubernetes.io/component")}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": name, "image": image,
                                                  "ports": [{"containerPort": 8000}]}]}},
        },
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                   "updatedReplicas": 1},
    }


@dataclass
class Check:
    step: float  # live_state STEP_START -> STEP_SUCCESS
    wall: float  # execute_in_process as the caller sees it
    calls: Counter  # "list deployments" / "get applications" / "patch applications" ... -> count
    passed: bool | None


@dataclass
class SizeResult:
    size: int
    checks: list[Check]
    reads: list[float]  # ArgoCDClient.get + deployment_images, seconds
    refreshes: list[float]  # ArgoCDClient.refresh_and_read, seconds
    fast_refreshes: list[float]  # the same, polling every FAST_POLL s instead of its default 1 s
    listed: int  # Deployments the client's list returned

    def median(self, attr: str) -> float:
        return statistics.median(getattr(c, attr) for c in self.checks)

    def calls_key(self, key: tuple[str, str]) -> int:
        """The largest count of one kind of request seen in one check (all checks agree when they are alike)."""
        return max(c.calls.get(key, 0) for c in self.checks)

    def per_check(self) -> str:
        keys = sorted({k for c in self.checks for k in c.calls})
        return ", ".join(f"{verb} {kind} {self.calls_key((verb, kind))}" for verb, kind in keys)


def _client_requests(double: ArgoCDControllerDouble) -> list[tuple[str, str]]:
    """(action or method, resource plural) of every request the pipeline's client sent so far."""

    def read() -> list[tuple[str, str]]:
        out = []
        for request in list(double.emulator):
            if not str(request.headers.get("User-Agent", "")).startswith(CLIENT_AGENT):
                continue
            method = str(request.method.value).lower()
            # kmock names the Kubernetes actions fetch/update; say get and the HTTP verb, as kubectl would.
            action = str(request.action.value).lower() if request.action is not None else method
            verb = {"fetch": "get", "update": method}.get(action, action)
            kind = request.resource.plural if request.resource is not None else request.url.path
            out.append((verb, str(kind)))
        return out

    return double.call(read)


def _step_seconds(instance: dg.DagsterInstance, run_id: str, step_key: str) -> float:
    T = dg.DagsterEventType
    start = end = None
    for entry in instance.all_logs(run_id, of_type={T.STEP_START, T.STEP_SUCCESS}):
        event = entry.dagster_event
        if event is None or event.step_key != step_key:
            continue
        if event.event_type == T.STEP_START:
            start = entry.timestamp
        else:
            end = entry.timestamp
    if start is None or end is None:
        raise RuntimeError(f"run {run_id} has no complete {step_key} step")
    return end - start


def measure_size(size: int, rounds: int, tmp: Path) -> SizeResult:
    names = app_names(size)
    base = tmp / f"n{size}"
    started: list[services.Service] = []
    double: ArgoCDControllerDouble | None = None
    try:
        git_port = services.free_port()
        started.append(services.start_git_daemon(base / "git", git_port))
        bare = base / "git" / "deploy.git"
        services.seed_remote(bare, [], rewrite=lambda work: (
            (work / "k3d" / "helm").mkdir(parents=True, exist_ok=True),
            (work / "k3d" / "helm" / "values.yaml").write_text(values_text(names))))
        url = f"git://127.0.0.1:{git_port}/deploy.git"

        double = ArgoCDControllerDouble(
            image_values={f"{name}.image": f"{RELEASE}-{name}" for name in names},
            deploy_namespace=DEPLOY_NAMESPACE).start()
        for name in names:
            double.put_object("apps/v1/deployments", deployment(name, f"{REGISTRY}/{name}:{TAG}"))
        double.create_application(application_from_yaml(REPO_ROOT / "k3d" / "argocd" / "application.yaml"),
                                  repo_url=url)
        double.wait_for(lambda: bool(double.events_of("refresh")), timeout=30)
        kubeconfig = double.write_kubeconfig(base / "kubeconfig")

        settings = Settings(git_url=url, apps=tuple(names), kubeconfig=str(kubeconfig),
                            registry=REGISTRY, workdir=str(base / "work"), sync_timeout=60)
        job = build_definitions(settings).resolve_job_def("drift_check")
        checks: list[Check] = []
        with dg.instance_for_test() as instance:
            for n in range(rounds + 1):  # the first: untimed (clones the deploy repo into the git cache)
                before = len(_client_requests(double))
                t0 = time.perf_counter()
                result = job.execute_in_process(instance=instance, raise_on_error=True)
                wall = time.perf_counter() - t0
                calls = Counter(_client_requests(double)[before:])
                evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
                if n == 0:
                    continue
                checks.append(Check(step=_step_seconds(instance, result.run_id, "live_state"), wall=wall,
                                    calls=calls, passed=evaluations.get(LIVE_MATCHES_GIT)))
                print(f"drift check, {size} Deployments, round {n}: step {checks[-1].step:.3f} s, "
                      f"calls {dict(calls)}", file=sys.stderr, flush=True)

        # The client alone: the two reads the verdict is made of, and the refresh it waits for.
        reads: list[float] = []
        refreshes: list[float] = []
        listed = 0
        with ArgoCDClient.from_kubeconfig(kubeconfig=str(kubeconfig), context=None, app_name=APP_NAME,
                                          namespace=APP_NAMESPACE) as client:
            client.get()  # connection set-up, untimed
            for _ in range(max(rounds, 3)):
                t0 = time.perf_counter()
                client.get()
                listed = len(client.deployment_images(namespace=DEPLOY_NAMESPACE))
                reads.append(time.perf_counter() - t0)
            for _ in range(rounds):
                t0 = time.perf_counter()
                client.refresh_and_read()
                refreshes.append(time.perf_counter() - t0)
            fast_refreshes: list[float] = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                client.refresh_and_read(poll_interval=FAST_POLL)
                fast_refreshes.append(time.perf_counter() - t0)
        if double.errors:
            raise RuntimeError(f"the Argo CD double's controller failed: {double.errors}")
        return SizeResult(size, checks, reads, refreshes, fast_refreshes, listed)
    finally:
        if double is not None:
            double.stop()
        for service in reversed(started):
            service.stop()


def figures_for(results: Sequence[SizeResult]) -> list[Figure]:
    out: list[Figure] = []
    for r in results:
        lists = r.calls_key(("list", "deployments"))
        verdict = {True: "check passed", False: "check FAILED (not a clean comparison)", None: "check not evaluated"}
        passed = {c.passed for c in r.checks}
        state = verdict[passed.pop()] if len(passed) == 1 else f"check results {passed}"
        out.append(Figure(
            "P7", f"drift check (live_state step), {r.size} Deployments", r.median("step"), "s",
            TARGET_SECONDS, "<=",
            f"real drift_check job in process, median of {len(r.checks)} (min {min(c.step for c in r.checks):.2f}, "
            f"max {max(c.step for c in r.checks):.2f}); job wall {r.median('wall'):.2f} s; "
            f"of which refresh_and_read ~{statistics.median(r.refreshes):.2f} s (measured alone; "
            f"{statistics.median(r.fast_refreshes):.2f} s when it polls every {FAST_POLL:g} s instead of 1 s); "
            f"{state}"))
        out.append(Figure(
            "P7", f"Deployment list calls per drift check, {r.size} Deployments", lists, "calls", 1, "==",
            f"requests kmock received per check: {r.per_check()}"))
        out.append(Figure(
            "P7", f"client reads (Application get + Deployment list), {r.size} Deployments",
            statistics.median(r.reads), "s", TARGET_SECONDS, "<=",
            f"ArgoCDClient.get + deployment_images, median of {len(r.reads)}; the list returned {r.listed} "
            f"Deployments"))
    return out


def run(options: argparse.Namespace | None = None) -> list[Figure]:
    quick = bool(getattr(options, "quick", False))
    rounds = getattr(options, "drift_rounds", None) or (2 if quick else 5)
    sizes = getattr(options, "drift_sizes", None) or (10, 100)
    tmp = Path(tempfile.mkdtemp(prefix="coelho-bench-drift-"))
    out: list[Figure] = []
    try:
        for size in sizes:
            try:
                out += figures_for([measure_size(size, rounds, tmp)])
            except Exception as e:  # noqa: BLE001 - one size failing still leaves the others measured
                print(f"drift check, {size} Deployments: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
                out.append(Figure("P7", f"drift check (live_state step), {size} Deployments", float("nan"), "s",
                                  TARGET_SECONDS, "<=", f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}"))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed checks per size instead of 5")
    parser.add_argument("--rounds", dest="drift_rounds", type=int, help="timed drift checks per size")
    parser.add_argument("--sizes", dest="drift_sizes", type=lambda s: tuple(int(x) for x in s.split(",")),
                        help="numbers of Deployments (default 10,100)")
    print(table(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
