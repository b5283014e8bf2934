"""The three app images: each builds from the app folder as a clean clone has it, with the base
image given by build argument, starts on the host network, reports healthy through its own
Dockerfile HEALTHCHECK, answers its HTTP health endpoint and runs as a non-root user.

Fixtures ``docker_client`` and ``base_images`` come from tests/conftest.py (an engine that answers
or a private one; the local stand-ins for python:3.11-slim and node:18-slim).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.docker


@dataclass(frozen=True)
class AppImage:
    name: str
    base_arg: str            # build argument naming the base image
    default_base: str        # its default in the Dockerfile (the official image)
    port_env: str            # env var setting the port the health endpoint listens on
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    source_file: str = ""    # a source file a source-only change touches


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APPS = {
    "fastapi": AppImage("fastapi", "PYTHON_IMAGE", "python:3.11-slim", "PORT", "/health",
                        source_file="app/__init__.py"),
    # A broker address nobody listens on: the producers must stay alive and healthy while retrying.
    "kafka_producers": AppImage("kafka_producers", "PYTHON_IMAGE", "python:3.11-slim", "METRICS_PORT", "/health",
                                env={"KAFKA_MAX_BACKOFF_SECONDS": "2"}, source_file="producers/__init__.py"),
    "sveltekit": AppImage("sveltekit", "NODE_IMAGE", "node:20-slim", "PORT", "/healthz",
                          source_file="src/routes/healthz/+server.js"),
}


# --- helpers ------------------------------------------------------------------------------------
def export_app(app: str, dest: Path) -> Path:
    """Copy apps/<app> as a clean clone would have it: files git tracks or would track (not ignored),
    so no node_modules, build output, venvs or caches of this work tree leak into the context."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", f"apps/{app}"],
                         cwd=ROOT, check=True, capture_output=True).stdout.decode()
    context = dest / app
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the work tree is not part of it
            target = dest / Path(rel).relative_to("apps")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    assert (context / "Dockerfile").is_file(), f"apps/{app}/Dockerfile is missing"
    return context


def build_args(spec: AppImage, base_images: dict[str, str]) -> dict[str, str]:
    # Only the base image: the pipeline builds with exactly these arguments (COELHO_BUILD_ARGS).
    return {spec.base_arg: base_images[spec.base_arg]}


def build(client, context: Path, tag: str, args: dict[str, str]) -> tuple[str, list[str], float]:
    started = time.monotonic()
    lines: list[str] = []
    image_id = None
    for chunk in client.api.build(path=str(context), tag=tag, buildargs=args, network_mode="host", rm=True,
                                  forcerm=True, decode=True):
        if "error" in chunk:
            raise AssertionError(f"build of {tag} failed: {chunk['error']}\n{''.join(lines[-40:])}")
        if "stream" in chunk:
            lines.append(chunk["stream"])
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    assert image_id or any("Successfully built" in line for line in lines), "".join(lines[-20:])
    return image_id or client.images.get(tag).id, lines, time.monotonic() - started


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(container, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        status = state.get("Health", {}).get("Status", "none")
        if status == "healthy":
            return status
        if state["Status"] == "exited" or status == "unhealthy":
            break
        time.sleep(1)
    logs = container.logs(tail=60).decode(errors="replace")
    raise AssertionError(f"container {container.name} not healthy (health {status}, "
                         f"state {container.attrs['State']['Status']}):\n{logs}")


# --- static checks on the Dockerfiles (no engine needed) ----------------------------------------
@pytest.mark.parametrize("app", APPS)
def test_dockerfile_contract(app):
    spec = APPS[app]
    text = (ROOT / "apps" / app / "Dockerfile").read_text()
    assert f"ARG {spec.base_arg}={spec.default_base}" in text
    assert re.search(rf"^FROM \$\{{{spec.base_arg}\}}", text, re.M)
    assert re.search(r"^HEALTHCHECK --interval=\d+s", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    lock = "package-lock.json" if app == "sveltekit" else "requirements.lock"
    assert (ROOT / "apps" / app / lock).is_file()
    # the dependency install (from the lock) comes before the source is copied
    assert text.index(f"COPY {'package.json package-lock.json' if app == 'sveltekit' else lock}") \
        < text.index("COPY src/" if app == "sveltekit" else f"COPY {spec.source_file.split('/')[0]}/")


# --- build, run, healthy --------------------------------------------------------------------------
@pytest.mark.parametrize("app", APPS)
def test_image_builds_starts_and_reports_healthy(app, docker_client, base_images, tmp_path):
    client = docker_client
    spec = APPS[app]
    tag = f"coelho-apptest/{app.replace('_', '-')}:test"
    context = export_app(app, tmp_path)
    image_id, _, seconds = build(client, context, tag, build_args(spec, base_images))
    print(f"{app}: built {tag} in {seconds:.1f}s, {client.images.get(image_id).attrs['Size'] / 1e6:.0f} MB")

    image = client.images.get(image_id)
    user = image.attrs["Config"]["User"]
    assert user and user.split(":")[0] not in ("root", "0"), f"image user is {user!r}"
    assert image.attrs["Config"]["Healthcheck"]["Test"], "no HEALTHCHECK in the image"

    port = _unused_port()
    env = {"HOST": "127.0.0.1", spec.port_env: str(port), **spec.env}
    if app == "kafka_producers":
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{_unused_port()}"
    if app == "sveltekit":
        env["FASTAPI_URL"] = f"http://127.0.0.1:{_unused_port()}"
    # As the Helm chart runs it: read-only root filesystem, a writable /tmp only.
    container = client.containers.run(image_id, detach=True, network_mode="host", environment=env,
                                      read_only=True, tmpfs={"/tmp": "rw,size=64m"},
                                      name=f"coelho-apptest-{app.replace('_', '-')}-{port}")
    try:
        wait_healthy(container)
        status, body = http_get(f"http://127.0.0.1:{port}{spec.health_path}")
        assert status == 200, body
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid.isdigit() and int(uid) != 0, f"container runs as uid {uid}"
        if app == "fastapi":
            status, body = http_get(f"http://127.0.0.1:{port}/health/ready")
            assert status == 503 and "KAFKA_BOOTSTRAP_SERVERS" in json.loads(body)["missing"][0]
            assert b"coelho_model_samples_learned" in http_get(f"http://127.0.0.1:{port}/metrics")[1]
        if app == "kafka_producers":
            assert json.loads(body)["kafka_connected"] is False
            assert b"kafka_producer_connection_retries_total" in http_get(f"http://127.0.0.1:{port}/metrics")[1]
        if app == "sveltekit":
            status, page = http_get(f"http://127.0.0.1:{port}/tfd")
            assert status == 200 and b"Transaction Fraud Detection" in page
            assert b"FastAPI unreachable" in page  # rendered server-side, with the reason
            status, _ = http_get(f"http://127.0.0.1:{port}/api/tfd/status")
            assert status == 502
        container.stop(timeout=10)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs(tail=30).decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("app", APPS)
def test_source_only_change_reuses_the_dependency_layer(app, docker_client, base_images, tmp_path):
    client = docker_client
    spec = APPS[app]
    tag = f"coelho-apptest/{app.replace('_', '-')}:test"
    context = export_app(app, tmp_path)
    args = build_args(spec, base_images)
    build(client, context, tag, args)  # warm (cached from the test above when run together)
    with (context / spec.source_file).open("a") as f:
        f.write(f"\n// source-only change {time.time()}\n" if app == "sveltekit"
                else f"\n# source-only change {time.time()}\n")
    _, lines, seconds = build(client, context, tag, args)
    log = "".join(lines)
    install = "npm ci" if app == "sveltekit" else "pip install --require-hashes"
    step = log[log.index(install):]
    assert step.split("Step ", 1)[0].count("Using cache") >= 1, log
    print(f"{app}: source-only rebuild {seconds:.1f}s")
    assert seconds < 120
