"""The process: three producer loops sharing one Kafka producer, a health server, clean shutdown.

* Without a reachable broker the process stays up and retries with backoff (``kafka_connected``
  false in ``/health``); SIGTERM/SIGINT stop it cleanly (pending messages are flushed), exit 0.
* If any producer loop dies, the others are stopped and the process exits 1, so the container
  (and the pod) fails visibly instead of running on with a dead child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Mapping, Protocol, Sequence

from aiokafka import AIOKafkaProducer

from .generators import InteractionGenerator, TransactionGenerator, TripGenerator
from .telemetry import HealthServer, Metrics

log = logging.getLogger("producers")

DEFAULT_TOPICS = {"tfd": "transaction_fraud_detection", "eta": "estimated_time_of_arrival",
                  "ecci": "e_commerce_customer_interactions"}
# The original rates: uniform(0.05, 0.5) s sleeps ~ 3.6/s, uniform(0.1, 1.0) ~ 1.8/s, 600/min = 10/s.
DEFAULT_RATES = {"tfd": 3.6, "eta": 1.8, "ecci": 10.0}


class Generator(Protocol):
    def next_event(self) -> dict[str, Any]: ...
    def key(self, event: dict[str, Any]) -> str: ...


@dataclass
class Config:
    bootstrap_servers: str | None
    topics: dict[str, str]
    rates: dict[str, float]
    seed: str | None
    host: str = "0.0.0.0"
    metrics_port: int = 8000
    fraud_probability: float = 0.01
    bad_weather_probability: float = 0.1
    incident_probability: float = 0.02
    heavy_traffic_multiplier: float = 2.0
    max_sessions: int = 500
    session_timeout_minutes: float = 15.0
    max_backoff: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """CLI arguments win over environment variables, which win over the defaults."""
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="python -m producers", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap-servers", default=env.get("KAFKA_BOOTSTRAP_SERVERS") or None)
    for case in DEFAULT_TOPICS:
        p.add_argument(f"--topic-{case}", default=env.get(f"KAFKA_TOPIC_{case.upper()}") or DEFAULT_TOPICS[case])
        p.add_argument(f"--rate-{case}", type=float,
                       default=float(env.get(f"PRODUCER_RATE_{case.upper()}") or DEFAULT_RATES[case]),
                       help="messages per second; 0 disables this producer")
    p.add_argument("--seed", default=env.get("PRODUCER_SEED") or None)
    p.add_argument("--host", default=env.get("HOST", "0.0.0.0"))
    p.add_argument("--metrics-port", type=int, default=int(env.get("METRICS_PORT", "8000")))
    p.add_argument("--fraud-probability", type=float, default=float(env.get("FRAUD_PROBABILITY", "0.01")))
    p.add_argument("--bad-weather-probability", type=float, default=0.1)
    p.add_argument("--incident-probability", type=float, default=0.02)
    p.add_argument("--heavy-traffic-multiplier", type=float, default=2.0)
    p.add_argument("--max-sessions", type=int, default=500)
    p.add_argument("--session-timeout-minutes", type=float, default=15.0)
    p.add_argument("--max-backoff", type=float, default=float(env.get("KAFKA_MAX_BACKOFF_SECONDS", "30")))
    a = p.parse_args(argv)
    for case in DEFAULT_TOPICS:
        if getattr(a, f"rate_{case}") < 0:
            p.error(f"--rate-{case} must be >= 0")
    return Config(
        bootstrap_servers=a.bootstrap_servers,
        topics={c: getattr(a, f"topic_{c}") for c in DEFAULT_TOPICS},
        rates={c: getattr(a, f"rate_{c}") for c in DEFAULT_TOPICS},
        seed=a.seed, host=a.host, metrics_port=a.metrics_port, fraud_probability=a.fraud_probability,
        bad_weather_probability=a.bad_weather_probability, incident_probability=a.incident_probability,
        heavy_traffic_multiplier=a.heavy_traffic_multiplier, max_sessions=a.max_sessions,
        session_timeout_minutes=a.session_timeout_minutes, max_backoff=a.max_backoff,
    )


def build_generators(cfg: Config) -> dict[str, Generator]:
    def rng(case: str) -> random.Random:
        # A string seed hashes stably across runs and processes (unlike hash()).
        return random.Random(f"{cfg.seed}:{case}") if cfg.seed is not None else random.Random()

    return {
        "tfd": TransactionGenerator(rng("tfd"), fraud_probability=cfg.fraud_probability),
        "eta": TripGenerator(rng("eta"), heavy_traffic_multiplier=cfg.heavy_traffic_multiplier,
                             bad_weather_probability=cfg.bad_weather_probability,
                             incident_probability=cfg.incident_probability),
        "ecci": InteractionGenerator(rng("ecci"), max_sessions=cfg.max_sessions,
                                     session_timeout=timedelta(minutes=cfg.session_timeout_minutes)),
    }


def serialize(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


class KafkaSink:
    """The Kafka boundary: one aiokafka producer, connection retries and delivery accounting."""

    def __init__(self, bootstrap_servers: str, metrics: Metrics, *, max_backoff: float = 30.0,
                 producer_factory: Callable[..., Any] = AIOKafkaProducer) -> None:
        self.bootstrap_servers, self.metrics, self.max_backoff = bootstrap_servers, metrics, max_backoff
        self.producer_factory = producer_factory
        self.producer: Any = None
        self.connected = False
        self.attempts = 0
        self.last_error: str | None = None
        self.delivered: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    async def connect(self, stop: asyncio.Event) -> bool:
        """Retry with exponential backoff until connected (True) or asked to stop (False)."""
        backoff = 1.0
        while not stop.is_set():
            producer = self.producer_factory(bootstrap_servers=self.bootstrap_servers, client_id="coelho-producers",
                                             acks="all", linger_ms=5, request_timeout_ms=15000)
            self.attempts += 1
            try:
                await producer.start()
            except Exception as exc:  # noqa: BLE001 - any failure to start means: retry later
                with suppress(Exception):
                    await producer.stop()
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.connection_retries.inc()
                log.warning("broker %s not reachable (%s); retrying in %.0fs", self.bootstrap_servers,
                            self.last_error, backoff)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.producer, self.connected, self.last_error = producer, True, None
            self.metrics.connected.set(1)
            log.info("connected to %s", self.bootstrap_servers)
            return True
        return False

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Hand one message to the client; the outcome is counted when the broker answers."""
        started = time.perf_counter()
        self.metrics.message_size.labels(topic).observe(len(value))
        try:
            future = await self.producer.send(topic, value=value, key=key.encode())
        except Exception as exc:  # noqa: BLE001 - e.g. buffer full or metadata timeout
            self._failed(topic, exc)
            return
        future.add_done_callback(lambda f: self._delivered(topic, started, f))

    def _delivered(self, topic: str, started: float, future: "asyncio.Future[Any]") -> None:
        if future.cancelled():
            self._failed(topic, asyncio.CancelledError())
        elif future.exception() is not None:
            self._failed(topic, future.exception())
        else:
            self.delivered[topic] = self.delivered.get(topic, 0) + 1
            self.metrics.sent.labels(topic).inc()
            self.metrics.send_duration.labels(topic).observe(time.perf_counter() - started)
            self.metrics.last_message.labels(topic).set(time.time())
            if not self.connected:
                self.connected = True
                self.metrics.connected.set(1)

    def _failed(self, topic: str, exc: BaseException | None) -> None:
        self.failed[topic] = self.failed.get(topic, 0) + 1
        self.metrics.errors.labels(topic, type(exc).__name__).inc()
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.connected = False
        self.metrics.connected.set(0)
        log.error("delivery to %s failed: %s", topic, self.last_error)

    async def close(self) -> None:
        if self.producer is not None:
            with suppress(Exception):
                await self.producer.stop()  # flushes what is still pending
        self.connected = False
        self.metrics.connected.set(0)


class ProducerLoop:
    def __init__(self, case: str, topic: str, generator: Generator, rate: float, sink: KafkaSink,
                 metrics: Metrics, rng: random.Random | None = None) -> None:
        self.case, self.topic, self.generator, self.rate = case, topic, generator, rate
        self.sink, self.metrics, self.rng = sink, metrics, rng or random.Random()
        self.produced = 0
        self.running = False

    def interval(self) -> float:
        # Mean 1/rate with 30 % Gaussian jitter (the original ECCI producer's shape), never negative.
        return max(0.0, self.rng.gauss(1.0, 0.3)) / self.rate

    async def run(self, stop: asyncio.Event) -> None:
        self.running = True
        try:
            while not stop.is_set():
                event = self.generator.next_event()
                await self.sink.send(self.topic, self.generator.key(event), serialize(event))
                self.produced += 1
                self._gauges()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval())
        finally:
            self.running = False

    def _gauges(self) -> None:
        if isinstance(self.generator, TransactionGenerator):
            self.metrics.fraud_ratio.set(self.generator.fraud_ratio)
        elif isinstance(self.generator, InteractionGenerator):
            self.metrics.active_sessions.set(len(self.generator.sessions))


class App:
    def __init__(self, cfg: Config, *, sink: KafkaSink | None = None,
                 generators: dict[str, Generator] | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.stop = asyncio.Event()
        self.sink = sink or (KafkaSink(cfg.bootstrap_servers, self.metrics, max_backoff=cfg.max_backoff)
                             if cfg.bootstrap_servers else None)
        generators = generators or build_generators(cfg)
        self.loops = [ProducerLoop(c, cfg.topics[c], generators[c], cfg.rates[c], self.sink, self.metrics,
                                   random.Random(f"{cfg.seed}:{c}:timing") if cfg.seed is not None else None)
                      for c in DEFAULT_TOPICS if cfg.rates[c] > 0 and self.sink is not None]
        self.failed: list[str] = []

    def health(self) -> dict[str, Any]:
        sink = self.sink
        return {
            "status": "alive",
            "kafka_connected": bool(sink and sink.connected),
            "bootstrap_servers": self.cfg.bootstrap_servers,
            "connection_attempts": sink.attempts if sink else 0,
            "last_error": sink.last_error if sink else "KAFKA_BOOTSTRAP_SERVERS is not set",
            "producers": {loop.case: {"topic": loop.topic, "rate_per_second": loop.rate, "running": loop.running,
                                      "produced": loop.produced,
                                      "delivered": sink.delivered.get(loop.topic, 0) if sink else 0,
                                      "failed": sink.failed.get(loop.topic, 0) if sink else 0}
                          for loop in self.loops},
        }

    async def run(self) -> int:
        if self.sink is None:
            log.error("KAFKA_BOOTSTRAP_SERVERS is not set: nothing to produce to; idling until stopped")
            await self.stop.wait()
            return 0
        if not await self.sink.connect(self.stop):
            return 0
        tasks = {asyncio.create_task(loop.run(self.stop), name=f"produce-{loop.case}"): loop for loop in self.loops}
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            # A producer that raised, or ended while nobody asked it to, is a failure. One that ended
            # because stop was set (it can finish in the same loop iteration as the stopper) is not.
            if task is not stopper and (task.exception() is not None or not self.stop.is_set()):
                self.failed.append(tasks[task].case)
                log.error("producer %s died: %r", tasks[task].case, task.exception())
        self.stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results):
            if isinstance(result, BaseException) and tasks[task].case not in self.failed:
                self.failed.append(tasks[task].case)
        stopper.cancel()
        await self.sink.close()
        return 1 if self.failed else 0


async def amain(cfg: Config) -> int:
    app = App(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop.set)
    server = HealthServer(cfg.host, cfg.metrics_port, app.metrics, app.health).start()
    log.info("health and metrics on %s:%d", cfg.host, server.port)
    try:
        return await app.run()
    finally:
        server.stop()
