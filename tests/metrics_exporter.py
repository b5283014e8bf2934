"""A small Prometheus exporter on 127.0.0.1 for the verification tests: it serves ``/metrics`` in
the text exposition format, with gauges the test sets (as the FastAPI app's /metrics would report
its error ratio). Real HTTP, scraped by a real Prometheus."""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MetricsExporter:
    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-exporter", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = value

    def exposition(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        return "".join(f"# TYPE {n} gauge\n{n} {'NaN' if math.isnan(v) else repr(v)}\n" for n, v in items)

    def __enter__(self) -> MetricsExporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
