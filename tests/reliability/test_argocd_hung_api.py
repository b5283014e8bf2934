"""Case 6 (Kubernetes part): a Kubernetes API that accepts connections and never answers.

A real listening socket on 127.0.0.1 stands in for a hung apiserver; the official client talks to
it through a kubeconfig, exactly as in production. Every call must come back within its bound
with a transient ArgoCDError that names the Application, the verb and the timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coelho_pipeline.errors import failure
from coelho_pipeline.resources.argocd import ArgoCDClient, ArgoCDError, ArgoCDResource

TOKEN = "hung-api-bearer-token-do-not-leak"


class HungServer:
    """Accepts every connection, reads what is sent, never writes a byte back."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.requests.append(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()  # a client still waiting (the old code) sees EOF and ends


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def kubeconfig_for(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: hung\n"
        f"clusters: [{{name: hung, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        f"users: [{{name: u, user: {{token: {TOKEN}}}}}]\n"
        "contexts: [{name: hung, context: {cluster: hung, user: u}}]\n"
    )
    return path


def call_within(fn: Callable[[], Any], bound: float) -> tuple[BaseException | None, float]:
    """Runs ``fn`` in a thread; fails the test if it does not return within ``bound`` seconds."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"the call did not return within {bound:g}s: it hangs on a silent API"
    return outcome[0], time.monotonic() - started


def test_the_default_bound_turns_a_hung_get_into_a_clear_transient_error(hung: HungServer, tmp_path: Path) -> None:
    resource = ArgoCDResource(kubeconfig=str(kubeconfig_for(tmp_path, hung.port)), context="hung")
    client = resource.client()
    assert client is not None
    error, took = call_within(client.status, bound=30)

    assert isinstance(error, ArgoCDError), error
    message = str(error)
    assert message == ("Application argocd/coelho-realtime: the Kubernetes API did not answer get "
                       "applications.argoproj.io in namespace argocd within the 15s read timeout")
    assert 14 <= took < 25
    assert error.transient and failure(error).allow_retries
    assert TOKEN not in message and TOKEN not in repr(error.__cause__)
    assert len(hung.requests) >= 1  # the request really reached the silent server, once (no hidden retries)
    client.close()


@pytest.mark.parametrize("verb, call", [
    ("patch applications.argoproj.io", lambda c: c.refresh()),
    ("list deployments.apps", lambda c: c.deployment_images(namespace="coelho-realtime")),
    ("get applications.argoproj.io", lambda c: c.sync(revision="a" * 40, timeout=5, poll_interval=0.1)),
    ("get applications.argoproj.io", lambda c: c.refresh_and_read(timeout=5, poll_interval=0.1)),
])
def test_every_verb_is_bounded(hung: HungServer, tmp_path: Path, verb: str, call: Callable[[Any], Any]) -> None:
    resource = ArgoCDResource(kubeconfig=str(kubeconfig_for(tmp_path, hung.port)), context="hung",
                              connect_timeout_seconds=1, request_timeout_seconds=1)
    with resource.client() as client:  # type: ignore[union-attr]
        error, took = call_within(lambda: call(client), bound=10)
    assert isinstance(error, ArgoCDError) and error.transient, error
    assert f"did not answer {verb}" in str(error) and "argocd/coelho-realtime" in str(error)
    assert "1s read timeout" in str(error)
    assert took < 5


def test_a_wait_on_a_hung_api_ends_at_its_deadline_with_the_last_api_error(hung: HungServer, tmp_path: Path) -> None:
    resource = ArgoCDResource(kubeconfig=str(kubeconfig_for(tmp_path, hung.port)), context="hung",
                              connect_timeout_seconds=1, request_timeout_seconds=1)
    with resource.client() as client:  # type: ignore[union-attr]
        error, took = call_within(lambda: client.wait_synced(revision="a" * 40, timeout=3, poll_interval=0.5),
                                  bound=15)
    assert isinstance(error, ArgoCDError) and error.transient  # no status was ever read
    assert "did not become Synced+Healthy" in str(error) and "no status could be read" in str(error)
    assert "within the 1s read timeout" in str(error)
    assert took < 8


class RecordingApi:
    """Stands in for CustomObjectsApi / AppsV1Api and records the _request_timeout of every call."""

    def __init__(self) -> None:
        self.timeouts: list[tuple[str, Any]] = []

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.timeouts.append(("get", kwargs.get("_request_timeout")))
        return {"metadata": {"name": "app", "namespace": "argocd"},
                "status": {"sync": {"status": "Synced", "revision": "a" * 40}, "health": {"status": "Healthy"},
                           "reconciledAt": "2025-01-01T00:00:00Z"}}

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.timeouts.append(("patch", kwargs.get("_request_timeout")))
        return {}

    def list_namespaced_deployment(self, *args: Any, **kwargs: Any) -> Any:
        self.timeouts.append(("list", kwargs.get("_request_timeout")))
        return type("L", (), {"items": []})()


def test_every_call_passes_the_request_timeout() -> None:
    api = RecordingApi()
    client = ArgoCDClient(custom_api=api, apps_api=api, app_name="app", namespace="argocd",  # type: ignore[arg-type]
                          request_timeout=(2.0, 7.0), sleep=lambda _: None)
    client.refresh_and_read(timeout=1)
    client.sync(revision="a" * 40)
    client.wait_synced(revision="a" * 40, timeout=1)
    client.deployment_images(namespace="ns")
    assert {verb for verb, _ in api.timeouts} == {"get", "patch", "list"}
    assert all(timeout == (2.0, 7.0) for _, timeout in api.timeouts), api.timeouts
