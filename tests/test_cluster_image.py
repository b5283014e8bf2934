"""The code location's image (./Dockerfile), built with the real Docker engine on the local stand-in
for python:3.11-slim (scripts/base-images.sh): it installs the pipeline, imports its definitions,
runs as a non-root user with git, and its default command serves the code location on port 3030.

pip reaches PyPI from inside the build (the same network the app images' builds use); no Docker Hub.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[1]


def build(client: docker.DockerClient, tag: str, build_args: dict[str, str]) -> str:
    """Builds ./Dockerfile with the repository root as context; returns the image id."""
    image_id = ""
    log: list[str] = []
    for chunk in client.api.build(path=str(REPO_ROOT), dockerfile="Dockerfile", tag=tag, buildargs=build_args,
                                  network_mode="host", rm=True, forcerm=True, decode=True):
        if "error" in chunk:
            raise AssertionError(f"the build failed: {chunk['error']}\n{''.join(log[-40:])}")
        log.append(chunk.get("stream", ""))
        image_id = chunk.get("aux", {}).get("ID", image_id)
    assert image_id, "the build reported no image id"
    return image_id


@pytest.fixture(scope="module")
def pipeline_image(docker_client: docker.DockerClient, base_images: dict[str, str]) -> Iterator[str]:
    tag = f"coelho-test/coelho-pipeline:{uuid.uuid4().hex[:8]}"
    build(docker_client, tag, {"PYTHON_IMAGE": base_images["PYTHON_IMAGE"]})
    yield tag
    docker_client.images.remove(tag, force=True)


def run(client: docker.DockerClient, image: str, argv: list[str]) -> str:
    """Runs ``argv`` in a throwaway container of ``image``; returns its output, failing on a non-zero exit."""
    container = client.containers.run(image, argv, detach=True)
    try:
        status = container.wait(timeout=120)
        output = container.logs().decode()
        assert status["StatusCode"] == 0, f"{argv} exited {status['StatusCode']}:\n{output}"
        return output
    finally:
        container.remove(force=True)


def test_the_image_installs_the_pipeline_and_imports_its_definitions(docker_client, pipeline_image) -> None:
    assert run(docker_client, pipeline_image, ["python", "-c", "import coelho_pipeline.definitions; print('ok')"]) \
        .strip().endswith("ok")
    # GitPython needs the binary; the run pods write as this user into the volumes the launcher mounts.
    assert run(docker_client, pipeline_image, ["git", "--version"]).startswith("git version")
    ids = run(docker_client, pipeline_image, ["sh", "-c", "id -u; id -g; test -w $DAGSTER_HOME && test -w "
                                              "/opt/dagster/storage && echo writable"]).split()
    assert ids == ["10001", "10001", "writable"]
    versions = run(docker_client, pipeline_image, ["python", "-c", "import dagster, dagster_k8s, dagster_postgres; "
                                                   "print(dagster.__version__, dagster_k8s.__version__, "
                                                   "dagster_postgres.__version__)"])
    assert versions.split() == ["1.13.27", "0.29.27", "0.29.27"]


def test_the_image_runs_the_charts_webserver_and_daemon_on_the_instance_class(docker_client, pipeline_image) -> None:
    # The chart starts the webserver, the daemon and its migrate Job from this image too
    # (k3d/dagster/values.yaml): their commands exist, and an instance naming DeliveryInstance loads.
    for command in (["dagster-webserver", "--help"], ["dagster-daemon", "run", "--help"],
                    ["dagster", "instance", "migrate", "--help"]):
        run(docker_client, pipeline_image, command)
    instance_class = yaml.safe_load((REPO_ROOT / "k3d" / "dagster" / "dagster.yaml").read_text())["instance_class"]
    script = ("import pathlib, sys, tempfile, yaml, dagster as dg; home = tempfile.mkdtemp(); "
              "config = {'instance_class': {'module': sys.argv[1], 'class': sys.argv[2]}}; "
              "pathlib.Path(home, 'dagster.yaml').write_text(yaml.safe_dump(config)); "
              "print(type(dg.DagsterInstance.from_config(home)).__name__)")
    loaded = run(docker_client, pipeline_image, ["python", "-c", script, instance_class["module"], instance_class["class"]])
    assert loaded.strip().splitlines()[-1] == instance_class["class"] == "DeliveryInstance"


def test_the_image_config_leaves_the_command_to_kubernetes(docker_client, pipeline_image) -> None:
    config = docker_client.images.get(pipeline_image).attrs["Config"]
    # K8sRunLauncher sets only the container's args (`dagster api execute_run …`): an ENTRYPOINT would
    # be prepended to them.
    assert not config.get("Entrypoint")
    assert config["Cmd"] == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030",
                             "-m", "coelho_pipeline.definitions", "--location-name", "coelho"]
    assert config["User"] == "10001:10001"
    assert "3030/tcp" in config["ExposedPorts"]
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in config["Env"]


def test_the_default_command_serves_the_code_location(docker_client, pipeline_image) -> None:
    """The image's own CMD, with the settings a pod gets from its ConfigMap: the code server loads the
    definitions and answers its health check (what the chart's probes run) on port 3030."""
    env = {"COELHO_GIT_URL": "file:///srv/none.git", "COELHO_APPS": "fastapi,kafka_producers,sveltekit"}
    container = docker_client.containers.run(pipeline_image, detach=True, environment=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            container.reload()
            assert container.status == "running", f"the code server exited:\n{container.logs().decode()}"
            code, output = container.exec_run(["dagster", "api", "grpc-health-check", "-p", "3030"])
            if code == 0:
                break
            assert time.monotonic() < deadline, f"no healthy code server after 180 s:\n{container.logs().decode()}"
            time.sleep(1)
    finally:
        container.remove(force=True)
