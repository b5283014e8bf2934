"""Prometheus metrics (the original names) and the /health + /metrics HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sent = Counter("kafka_producer_messages_sent_total", "Messages acknowledged by the broker",
                            ["topic"], registry=r)
        self.errors = Counter("kafka_producer_errors_total", "Messages that failed", ["topic", "error_type"],
                              registry=r)
        self.send_duration = Histogram("kafka_producer_send_duration_seconds", "Send to acknowledgement",
                                       ["topic"], registry=r)
        self.message_size = Histogram("kafka_producer_message_size_bytes", "Serialized message size", ["topic"],
                                      buckets=(128, 256, 512, 768, 1024, 2048, 4096), registry=r)
        self.connected = Gauge("kafka_producer_connected", "1 while the producer reaches the broker", registry=r)
        self.connection_retries = Counter("kafka_producer_connection_retries_total", "Failed connection attempts",
                                          registry=r)
        self.last_message = Gauge("kafka_producer_last_message_timestamp", "Unix time of the last ack", ["topic"],
                                  registry=r)
        self.fraud_ratio = Gauge("kafka_producer_fraud_ratio", "Share of fraudulent transactions produced",
                                 registry=r)
        self.active_sessions = Gauge("kafka_producer_active_sessions", "Open e-commerce sessions", registry=r)


class HealthServer:
    """``GET /health`` (JSON, always 200 while the process lives) and ``GET /metrics``, in a thread."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Callable[[], dict[str, Any]]) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path in ("/health", "/healthz"):
                    self._send(200, "application/json", json.dumps(health()).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self._send(404, "application/json", b'{"detail": "not found"}')

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="health-server", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
