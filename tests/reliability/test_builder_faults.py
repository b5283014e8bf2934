"""ImageBuilder against a hung engine, an engine that goes away and comes back, and a build that prints
thousands of lines (issue 7, cases 6, 7 and 9). Real Docker engines and the real registry; the hung
engine is a unix socket that accepts and never answers."""

from __future__ import annotations

import io
import shutil
import tarfile
import time
import uuid
from pathlib import Path

import docker
import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.resources.images import ImageBuilder, ImageBuilderResource, ImageError
from git_http import BlackHole

pytestmark = pytest.mark.docker


def _context(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def hung_engine(monkeypatch: pytest.MonkeyPatch):
    # A short path: unix socket paths are limited to 108 bytes and pytest's temp dirs are long.
    path = Path("/tmp") / f"coelho-hung-{uuid.uuid4().hex[:8]}.sock"
    with BlackHole(unix_path=path) as hole:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        yield hole
    path.unlink(missing_ok=True)


def test_a_hung_engine_is_a_transient_error_naming_image_and_engine(hung_engine) -> None:
    host = f"unix://{hung_engine.unix_path}"
    # version given: the SDK would otherwise ask the hung engine for it first.
    builder = ImageBuilder(api=docker.APIClient(base_url=host, version="1.41", timeout=2))
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        builder.build_and_push(context_tar=_context({"Dockerfile": "FROM scratch\n"}),
                               repository="127.0.0.1:5000/coelho/fastapi", tag="abc123", log=lambda _: None)
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert "127.0.0.1:5000/coelho/fastapi:abc123" in message and f"DOCKER_HOST={host}" in message, message
    assert "read timeout" in message and info.value.transient is True
    assert hung_engine.connections >= 1


def test_the_resource_gives_up_on_a_hung_engine_within_its_timeout(hung_engine) -> None:
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        ImageBuilderResource(timeout_seconds=2).builder()
    assert time.monotonic() - started < 15
    assert f"DOCKER_HOST=unix://{hung_engine.unix_path}" in str(info.value)
    assert info.value.transient is True


def test_the_engine_going_away_and_coming_back(registry_addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A throwaway engine (never the shared one) is stopped between two builds of one run, then restarted:
    a clear transient error while it is gone, and the same resource builds again once it is back."""
    state = Path("/tmp") / f"coelho-gone-{uuid.uuid4().hex[:8]}"
    service, host = services.start_dockerd(state)
    try:
        monkeypatch.setenv("DOCKER_HOST", host)
        resource = ImageBuilderResource(network_mode="host", timeout_seconds=60)
        context = _context({"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n", "hello.txt": "hi\n"})
        repository = f"{registry_addr}/coelho-reliability/gone"
        first = resource.builder()
        assert first.build_and_push(context_tar=context, repository=repository, tag="one",
                                    log=lambda _: None).digest.startswith("sha256:")

        service.stop()
        with pytest.raises(ImageError) as cached:  # a builder handed out before the engine went
            first.build_and_push(context_tar=context, repository=repository, tag="two", log=lambda _: None)
        assert f"{repository}:two" in str(cached.value) and f"DOCKER_HOST={host}" in str(cached.value)
        assert "went away" in str(cached.value) and cached.value.transient is True
        with pytest.raises(ImageError) as fresh:
            resource.builder()
        assert f"DOCKER_HOST={host}" in str(fresh.value) and fresh.value.transient is True

        service, host2 = services.start_dockerd(state)
        assert host2 == host
        built = resource.builder().build_and_push(context_tar=context, repository=repository, tag="three",
                                                  log=lambda _: None)
        assert built.digest.startswith("sha256:")
    finally:
        service.stop()
        netns = state / "exec" / "netns" / "default"
        if netns.exists():
            import subprocess
            subprocess.run(["umount", str(netns)], check=False, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def test_a_huge_build_log_arrives_in_bounded_batches_with_every_line(docker_host: str, registry_addr: str) -> None:
    client = docker.APIClient(base_url=docker_host, timeout=600)
    try:
        client.inspect_image("coelho-base/debian:bookworm")
    except docker.errors.ImageNotFound:
        pytest.fail("coelho-base/debian:bookworm missing: run scripts/base-images.sh")
    n = 5000
    # The nonce defeats the build cache (a cached RUN prints nothing). One write per line (not seq's
    # buffered blocks), so the engine streams hundreds of chunks, as a real chatty build does.
    dockerfile = (f"FROM coelho-base/debian:bookworm\n"
                  f"RUN echo {uuid.uuid4().hex}; i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; done\n")
    calls: list[str] = []
    builder = ImageBuilder(api=client, network_mode="host")
    started = time.monotonic()
    built = builder.build_and_push(context_tar=_context({"Dockerfile": dockerfile}),
                                   repository=f"{registry_addr}/coelho-reliability/chatty", tag=uuid.uuid4().hex,
                                   log=calls.append)
    elapsed = time.monotonic() - started
    client.close()
    lines = [line for batch in calls for line in batch.split("\n")]
    numbers = [line for line in lines if line.isdigit()]
    # At most one call per 200 lines, plus one per ~2 s of build time, plus the final flush.
    bound = len(lines) // 200 + 1 + int(elapsed / 2) + 2
    assert len(calls) <= bound, f"{len(calls)} log calls for {len(lines)} lines in {elapsed:.1f}s"
    assert numbers == [str(i) for i in range(1, n + 1)], "lines lost, split or reordered"
    assert built.log_lines == len(lines)
    assert len(lines) > n
    assert all(len(batch.split("\n")) <= 200 for batch in calls)


def test_a_failed_build_is_terminal_names_the_image_and_logs_what_led_to_it(docker_host: str,
                                                                           registry_addr: str) -> None:
    client = docker.APIClient(base_url=docker_host, timeout=600)
    calls: list[str] = []
    ref = f"{registry_addr}/coelho-reliability/broken"
    dockerfile = f"FROM coelho-base/debian:bookworm\nRUN echo before-{uuid.uuid4().hex[:6]}-fail && exit 3\n"
    try:
        with pytest.raises(ImageError) as info:
            ImageBuilder(api=client, network_mode="host").build_and_push(
                context_tar=_context({"Dockerfile": dockerfile}), repository=ref, tag="t", log=calls.append)
    finally:
        client.close()
    assert f"{ref}:t" in str(info.value) and info.value.transient is False
    assert any("-fail" in batch for batch in calls)
