"""``python -m coelho_pipeline.dev.up``: the whole delivery loop on one machine.

Starts (or reuses) a Docker engine, a registry on 127.0.0.1:5000 and a git daemon on
127.0.0.1:9418 serving ``coelho-realtime.git`` (seeded once from this repository's apps/ and k3d/),
builds the local base images, then runs the Dagster UI and daemon on sqlite. Ctrl-C stops all of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests

from coelho_pipeline.dev import services

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGES = "PYTHON_IMAGE=coelho-base/python:3.11-slim NODE_IMAGE=coelho-base/node:18-slim"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".state")
    parser.add_argument("--ui-port", type=int, default=3070)
    parser.add_argument("--registry-port", type=int, default=5000)
    parser.add_argument("--git-port", type=int, default=9418)
    args = parser.parse_args(argv)
    state: Path = args.state_dir.resolve()
    started: list[services.Service] = []

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        env = _start_services(state, args, started)
        home = state / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        env["DAGSTER_HOME"] = str(home)
        dagster = services.start_dagster_dev(project_dir=REPO_ROOT, env=env, port=args.ui_port,
                                             log_path=home / "dagster.log")
        started.append(dagster)
        print(f"""
coelho-pipeline is running.
  Dagster UI      http://127.0.0.1:{args.ui_port}/locations/coelho/asset-groups/delivery
  source remote   {env['COELHO_GIT_URL']}  (branch master, watched by git_push_sensor)
  registry        {env['COELHO_REGISTRY']}

Push a change and watch it delivered:
  git clone {env['COELHO_GIT_URL']} /tmp/coelho-realtime && cd /tmp/coelho-realtime
  echo '# touched' >> apps/fastapi/README.md && git commit -qam 'FastAPI: touch README' && git push
Dagster's own log: {dagster.log_path}
Ctrl-C stops everything.""", flush=True)
        dagster.process.wait()
        return dagster.process.returncode or 0
    except KeyboardInterrupt:
        return 0
    except services.ServiceError as e:
        print(f"up: {e}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(started):
            service.stop()


def _start_services(state: Path, args: argparse.Namespace, started: list[services.Service]) -> dict[str, str]:
    env = dict(os.environ)
    if not services.engine_answers(env.get("DOCKER_HOST")):
        service, host = services.start_dockerd(Path("/tmp") / f"coelho-dockerd-{os.getuid()}")
        started.append(service)
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"] = host
        print(f"started a Docker engine at {host}", flush=True)

    registry = f"127.0.0.1:{args.registry_port}"
    try:
        reachable = requests.get(f"http://{registry}/v2/", timeout=2).status_code == 200
    except requests.RequestException:
        reachable = False
    if not reachable:
        started.append(services.start_registry(state / "registry", args.registry_port))
        print(f"started a registry at {registry}", flush=True)

    bare = state / "git" / "coelho-realtime.git"
    if not bare.exists():
        sha = services.seed_remote(bare, [(REPO_ROOT, ["apps", "k3d", "README.md"])])
        print(f"seeded {bare} at {sha[:12]}", flush=True)
    started.append(services.start_git_daemon(state / "git", args.git_port))

    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "base-images.sh")], env=env, check=True)

    env.setdefault("COELHO_GIT_URL", f"git://127.0.0.1:{args.git_port}/coelho-realtime.git")
    env.setdefault("COELHO_REGISTRY", f"{registry}/coelho")
    env.setdefault("COELHO_BUILD_ARGS", BASE_IMAGES)
    # The engine may have no bridge network (ours never does): builds use the host's network.
    env.setdefault("COELHO_BUILD_NETWORK", "host")
    env.setdefault("COELHO_WORKDIR", str(state / "work"))
    return env


if __name__ == "__main__":
    sys.exit(main())
