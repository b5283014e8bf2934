"""Registry lookups against a hung registry, wrong answers and the real registry (issue 7, cases 6, 7
and 9). Sockets and HTTP servers on 127.0.0.1; the real registry is Debian's docker-registry."""

from __future__ import annotations

import socket
import time

import pytest

from coelho_pipeline.resources.images import ImageError, Registry, RegistryResource
from git_http import BlackHole, CannedHTTP

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def test_a_registry_that_never_answers_fails_within_the_read_timeout_naming_url_and_what_was_tried() -> None:
    with BlackHole() as hole:
        registry = Registry(prefix=f"{hole.address}/coelho", timeout=1.5)
        started = time.monotonic()
        with pytest.raises(ImageError) as info:
            registry.digest(f"{hole.address}/coelho/fastapi", "abc123")
        elapsed = time.monotonic() - started
        assert hole.connections == 1
    message = str(info.value)
    assert elapsed < 6, elapsed
    assert f"http://{hole.address}/v2/coelho/fastapi/manifests/abc123" in message, message
    assert "HEAD" in message and OCI_INDEX in message and "read timeout 1.5s" in message, message
    assert info.value.transient is True


def test_the_connect_timeout_is_separate_and_configurable() -> None:
    # A listener whose accept queue is full and never drained: the kernel drops new SYNs, so a connect hangs.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = "127.0.0.1:%d" % server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(server.getsockname())
            fillers.append(s)
        time.sleep(0.2)
        registry = RegistryResource(prefix=f"{address}/coelho", connect_timeout_seconds=1,
                                    timeout_seconds=30).registry()
        assert (registry.connect_timeout, registry.timeout) == (1, 30)
        started = time.monotonic()
        with pytest.raises(ImageError) as info:
            registry.digest(f"{address}/coelho/fastapi", "t")
        assert time.monotonic() - started < 10
        assert "ConnectTimeout" in str(info.value), str(info.value)
        assert "connect timeout 1s" in str(info.value) and info.value.transient is True
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_200_without_a_digest_header_is_an_error_naming_the_url_not_a_missing_tag() -> None:
    with CannedHTTP("200 OK", [("Content-Type", "text/html")]) as server:
        registry = Registry(prefix=f"{server.address}/coelho")
        with pytest.raises(ImageError) as info:
            registry.digest(f"{server.address}/coelho/fastapi", "abc123")
        method, path, headers = server.requests[0]
    message = str(info.value)
    assert f"http://{server.address}/v2/coelho/fastapi/manifests/abc123" in message
    assert "Docker-Content-Digest" in message and info.value.transient is False
    assert (method, path) == ("HEAD", "/v2/coelho/fastapi/manifests/abc123")
    assert OCI_INDEX in headers["accept"]


@pytest.mark.parametrize("status,transient", [
    ("500 Internal Server Error", True), ("502 Bad Gateway", True), ("503 Service Unavailable", True),
    ("429 Too Many Requests", True), ("400 Bad Request", False), ("405 Method Not Allowed", False),
    ("401 Unauthorized", False), ("403 Forbidden", False),
])
def test_registry_statuses_are_classified(status: str, transient: bool) -> None:
    with CannedHTTP(status) as server:
        registry = Registry(prefix=f"{server.address}/coelho", username="u", password="registry-pa55word")
        with pytest.raises(ImageError) as info:
            registry.digest(f"{server.address}/coelho/fastapi", "t")
    assert info.value.transient is transient, str(info.value)
    assert server.address in str(info.value) and "registry-pa55word" not in str(info.value)


def test_a_garbage_answer_is_a_transient_error_naming_the_url() -> None:
    with BlackHole(reply=b"SSH-2.0-OpenSSH\r\n") as hole:
        registry = Registry(prefix=f"{hole.address}/coelho", timeout=3)
        with pytest.raises(ImageError) as info:
            registry.digest(f"{hole.address}/coelho/fastapi", "t")
    assert f"{hole.address}/v2/coelho/fastapi/manifests/t" in str(info.value)
    assert info.value.transient is True


def test_a_refused_connection_is_transient() -> None:
    from coelho_pipeline.dev.services import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ImageError) as info:
        Registry(prefix=f"{address}/coelho").digest(f"{address}/coelho/fastapi", "t")
    assert info.value.transient is True and f"{address}/v2/coelho/fastapi" in str(info.value)


def test_the_real_registry_says_none_for_a_missing_tag(registry_addr: str) -> None:
    registry = Registry(prefix=f"{registry_addr}/coelho")
    assert registry.digest(f"{registry_addr}/coelho/fastapi", "0" * 40) is None


def test_many_digests_are_asked_side_by_side_and_an_error_raises() -> None:
    digest = "sha256:" + "a" * 64
    refs = [(f"app{i:02d}", f"t{i}") for i in range(12)]
    with CannedHTTP("200 OK", [("Docker-Content-Digest", digest)]) as server:
        registry = Registry(prefix=f"{server.address}/coelho")
        assert registry.digests([(f"{server.address}/coelho/{name}", tag) for name, tag in refs]) == [digest] * 12
        asked = sorted(path for _, path, _ in server.requests)
        assert asked == sorted(f"/v2/coelho/{name}/manifests/{tag}" for name, tag in refs)
    with CannedHTTP("503 Service Unavailable") as server:
        with pytest.raises(ImageError) as info:
            Registry(prefix=f"{server.address}/coelho").digests(
                [(f"{server.address}/coelho/{name}", tag) for name, tag in refs])
    assert info.value.transient is True and server.address in str(info.value)
