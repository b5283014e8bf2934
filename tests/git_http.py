"""A smart-HTTP Git server for tests (``git http-backend`` behind wsgiref) that demands a token.

Requests without ``Authorization: Basic base64(x-access-token:<token>)`` get 401, so a test that
fetches and pushes through it proves the token was really sent, and the recorded request lines
prove it never travelled in a URL.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _LoopbackWSGI:
    """A WSGI app served from a thread on 127.0.0.1 (a random port) for the length of a ``with`` block."""

    def _serve_app(self) -> None:
        self._server = make_server("127.0.0.1", 0, self._app, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict, start_response) -> Iterator[bytes]:
        raise NotImplementedError


class GitHTTPServer(_LoopbackWSGI):
    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.requests: list[str] = []  # "METHOD path?query" as received
        self.refused = 0
        self._serve_app()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def _app(self, environ: dict, start_response) -> Iterator[bytes]:
        self.requests.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}")
        if environ.get("HTTP_AUTHORIZATION") != self.expected:
            self.refused += 1
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"token required\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env.update(GIT_PROJECT_ROOT=str(self.root), GIT_HTTP_EXPORT_ALL="1", REMOTE_USER="x-access-token",
                   PATH=os.environ["PATH"])
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out[:2048] else b"\n\n"
        head, _, payload = out.partition(sep)
        status, headers = "200 OK", []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [payload]


class BlackHole:
    """Accepts connections on 127.0.0.1 (or a unix socket) and never answers: a hung service.

    ``reply`` set: every connection instead gets those bytes once and is closed (a service that answers
    wrongly). ``connections`` counts what was accepted, to prove a client never connected.
    """

    def __init__(self, *, unix_path: Path | None = None, reply: bytes | None = None) -> None:
        import socket

        if unix_path is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind(("127.0.0.1", 0))
        else:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(str(unix_path))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1] if unix_path is None else 0
        self.unix_path = unix_path
        self.reply = reply
        self.connections = 0
        self._held: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._held:
            conn.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.reply is None:
                self._held.append(conn)  # kept open, never read from or written to
            else:
                try:
                    conn.settimeout(2)
                    conn.recv(65536)
                    conn.sendall(self.reply)
                except OSError:
                    pass
                conn.close()


class CannedHTTP(_LoopbackWSGI):
    """An HTTP server on 127.0.0.1 giving every request the same status and headers (no body on HEAD).

    ``requests`` records (method, path, headers) as received.
    """

    def __init__(self, status: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers or []
        self.body = body
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._serve_app()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _app(self, environ: dict, start_response) -> Iterator[bytes]:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers))
        start_response(self.status, [("Content-Length", str(len(self.body))), *self.headers])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [self.body]
