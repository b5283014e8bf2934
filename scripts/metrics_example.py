"""Makes the README's example of the delivery insight from a real run (scripts/metrics-example).

Real parts, as in the tests: a Docker engine (the one that answers, or a private dockerd), a
registry and a git daemon on free loopback ports, the fixture apps, and the tests' Argo CD
controller double (tests/argocd_double.py, a test double) on kmock. The story: a seed delivery,
then pushes whose commit times lie over the past two weeks (GIT_COMMITTER_DATE; they are pushed
now), two bursts, one failed sync, one delivery rolled back and the fix after it. The deliveries
themselves take a few minutes, so the time axis of the plot spans minutes.

Writes docs/delivery-metrics.png and prints the report.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' harness and Argo CD double, reused as they are
sys.path.insert(0, str(ROOT / "benchmarks"))

import dagster as dg  # noqa: E402
from argocd_double import ArgoCDControllerDouble, application_from_yaml  # noqa: E402
from bench_delivery import start_registry_and_source  # noqa: E402
from conftest import BASE_IMAGES  # noqa: E402
from pipeline_harness import DEV, Pipeline, materializations, settings_for  # noqa: E402

from coelho_pipeline.dev import services  # noqa: E402

OUT = ROOT / "docs" / "delivery-metrics.png"
# (hours before now the commit was made, app folder changed, what happens to its delivery)
STORY = [
    (300, "fastapi", ""), (260, "sveltekit", ""), (200, "kafka_producers", ""),
    (190, "fastapi", "burst"), (170, "fastapi", ""), (120, "sveltekit", "fail sync"),
    (100, "sveltekit", ""), (80, "fastapi", "burst"), (70, "kafka_producers", ""),
    (50, "fastapi", "roll back"), (30, "fastapi", ""), (20, "sveltekit", ""),
    (8, "fastapi", ""), (2, "kafka_producers", ""),
]


def log(message: str) -> None:
    print(f"[metrics-example] {message}", file=sys.stderr, flush=True)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="coelho-metrics-"))
    started: list[services.Service] = []
    double = None
    try:
        with services.docker_engine(log) as host:
            subprocess.run(["bash", str(ROOT / "scripts" / "base-images.sh")], check=True,
                           env={**os.environ, "DOCKER_HOST": host})
            prefix, repo = start_registry_and_source(tmp, started)
            double = ArgoCDControllerDouble().start()
            double.create_application(application_from_yaml(ROOT / "k3d" / "argocd" / "application.yaml"),
                                      repo_url=repo.url)
            kubeconfig = double.write_kubeconfig(tmp / "kubeconfig")
            with dg.instance_for_test() as instance:
                pipeline = Pipeline(repo, settings_for(repo, prefix, tmp / "work", BASE_IMAGES,
                                                       kubeconfig=str(kubeconfig), verify_soak=0.0), instance)
                report = tell(pipeline, double)
        OUT.write_bytes(base64.b64decode(report["plot"].split("base64,", 1)[1].rstrip(")")))
        print(report["report"])
        log(f"wrote {OUT.relative_to(ROOT)}")
        return 0
    finally:
        if double is not None:
            double.stop()
        for service in reversed(started):
            service.stop()


def tell(pipeline: Pipeline, double: ArgoCDControllerDouble) -> dict:
    repo, now = pipeline.repo, datetime.now(UTC)
    assert pipeline.deliver(repo.head()).success
    last_good, waiting = repo.head(), False
    for n, (hours, app, event) in enumerate(STORY):
        moment = (now - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S+0000")
        env = {**DEV, "GIT_AUTHOR_DATE": moment, "GIT_COMMITTER_DATE": moment}
        if not waiting:
            services.git("pull", "-q", "--ff-only", "origin", repo.branch, cwd=repo.clone)
        sha = repo.commit({f"apps/{app}/main.py": f"print('change {n}')\n"}, f"{app}: change {n}", env)
        if event == "burst":  # delivered with the next commit, as the sensor does with a burst
            waiting = True
            continue
        waiting = False
        repo.publish()
        if event == "fail sync":
            double.fail_next_sync("one or more objects failed to apply: exceeded quota")
        result = pipeline.deliver(sha)
        log(f"{sha[:12]} {app} {event or 'delivered'}: {'ok' if result.success else 'failed'}")
        if event == "roll back":
            rollback = pipeline.defs.resolve_job_def("rollback").execute_in_process(
                partition_key=last_good, instance=pipeline.instance,
                run_config={"ops": {"rollback_commit": {"config": {"reason": "errors after the deploy"}}}})
            release = pipeline.defs.resolve_job_def("release_hold").execute_in_process(instance=pipeline.instance)
            assert rollback.success and release.success
        elif result.success:
            last_good = sha
    insight = pipeline.defs.resolve_job_def("delivery_insight").execute_in_process(instance=pipeline.instance)
    return materializations(insight)["delivery_metrics"]


if __name__ == "__main__":
    sys.exit(main())
