"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily


class _StateCollector:
    """Reads model and consumer state at scrape time, so gauges can never go stale."""

    def __init__(self, state: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> None:
        self._state = state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        cases, consumers = self._state()
        learned = GaugeMetricFamily("coelho_model_samples_learned", "Events the model has learned", labels=["case"])
        metric = GaugeMetricFamily("coelho_model_metric", "Progressive validation metric", labels=["case", "metric"])
        connected = GaugeMetricFamily("coelho_kafka_consumer_connected", "1 while the topic consumer is connected",
                                      labels=["case", "topic"])
        for key, case in cases.items():
            learned.add_metric([key], case.samples_learned)
            for name, value in case.metric_values().items():
                if value is not None:
                    metric.add_metric([key, name], value)
        for key, consumer in consumers.items():
            connected.add_metric([key, consumer.topic], 1.0 if consumer.connected else 0.0)
        yield from (learned, metric, connected)


class Telemetry:
    def __init__(self, state: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.events_consumed = Counter("coelho_events_consumed_total", "Events learned from Kafka",
                                       ["case"], registry=self.registry)
        self.events_invalid = Counter("coelho_events_invalid_total", "Events rejected by validation",
                                      ["case", "source"], registry=self.registry)
        self.predictions = Counter("coelho_predictions_total", "Predictions served", ["case"], registry=self.registry)
        self.learned_api = Counter("coelho_learn_requests_total", "Events learned through the API",
                                   ["case"], registry=self.registry)
        self.http_requests = Counter("coelho_http_requests_total", "HTTP requests",
                                     ["method", "route", "status"], registry=self.registry)
        self.http_latency = Histogram("coelho_http_request_duration_seconds", "HTTP request latency",
                                      ["route"], registry=self.registry)
        self.registry.register(_StateCollector(state))
