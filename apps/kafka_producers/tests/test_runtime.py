"""The process around the generators: config, the Kafka boundary, health, shutdown, failure.

The Kafka boundary (``KafkaSink``) is tested against a real broker (Tansu) and against stand-ins
that behave like aiokafka's producer (``start``/``send`` returning a delivery future/``stop``).
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from producers.runtime import App, KafkaSink, parse_config
from producers.telemetry import HealthServer, Metrics

from .conftest import free_port

APP_DIR = Path(__file__).resolve().parents[1]


def test_config_cli_over_env_over_defaults():
    cfg = parse_config([], {})
    assert cfg.bootstrap_servers is None and cfg.rates == {"tfd": 3.6, "eta": 1.8, "ecci": 10.0}
    assert cfg.topics["ecci"] == "e_commerce_customer_interactions" and cfg.metrics_port == 8000
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "PRODUCER_RATE_TFD": "7", "PRODUCER_SEED": "s",
           "METRICS_PORT": "9100", "KAFKA_TOPIC_ETA": "trips"}
    cfg = parse_config(["--rate-tfd", "2", "--rate-ecci", "0"], env)
    assert (cfg.bootstrap_servers, cfg.seed, cfg.metrics_port) == ("k:9092", "s", 9100)
    assert cfg.rates == {"tfd": 2.0, "eta": 1.8, "ecci": 0.0} and cfg.topics["eta"] == "trips"
    with pytest.raises(SystemExit):
        parse_config(["--rate-eta", "-1"], {})


class FakeProducer:
    """Behaves like AIOKafkaProducer: ``send`` enqueues and returns a future resolved on delivery."""

    fail_starts = 0
    deliver_error: Exception | None = None

    def __init__(self, **config):
        self.config, self.sent = config, []

    async def start(self):
        if FakeProducer.fail_starts > 0:
            FakeProducer.fail_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap")

    async def send(self, topic, value=None, key=None):
        future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value))
        if FakeProducer.deliver_error:
            future.set_exception(FakeProducer.deliver_error)
        else:
            future.set_result(object())
        return future

    async def stop(self):
        return None


def test_sink_retries_until_connected_and_counts_deliveries():
    FakeProducer.fail_starts, FakeProducer.deliver_error = 2, None
    metrics = Metrics()
    sink = KafkaSink("k:9092", metrics, max_backoff=0.01, producer_factory=FakeProducer)

    async def scenario():
        assert await sink.connect(asyncio.Event())
        for _ in range(3):
            await sink.send("t", "key", b"{}")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert sink.attempts == 3 and sink.connected
    assert metrics.connection_retries._value.get() == 2
    assert sink.delivered == {"t": 3} and metrics.sent.labels("t")._value.get() == 3
    assert sink.producer.config["acks"] == "all"


def test_delivery_errors_are_logged_and_counted(caplog):
    FakeProducer.fail_starts, FakeProducer.deliver_error = 0, KafkaTimeoutError("no ack")
    metrics = Metrics()
    sink = KafkaSink("k:9092", metrics, producer_factory=FakeProducer)

    async def scenario():
        await sink.connect(asyncio.Event())
        await sink.send("t", "key", b"{}")
        await sink.send("t", "key", b"{}")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    FakeProducer.deliver_error = None
    assert sink.failed == {"t": 2} and not sink.connected
    assert metrics.errors.labels("t", "KafkaTimeoutError")._value.get() == 2
    assert "delivery to t failed" in caplog.text


def test_a_dying_producer_stops_the_others_and_fails_the_process():
    FakeProducer.fail_starts, FakeProducer.deliver_error = 0, None
    cfg = parse_config(["--rate-tfd", "200", "--rate-eta", "200", "--rate-ecci", "200", "--seed", "1"],
                       {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})

    class Broken:
        def __init__(self):
            self.n = 0

        def next_event(self):
            self.n += 1
            if self.n > 5:
                raise RuntimeError("generator bug")
            return {"id": self.n}

        def key(self, event):
            return "k"

    app = App(cfg, sink=KafkaSink("k:9092", Metrics(), producer_factory=FakeProducer))
    app.loops[1].generator = Broken()
    code = asyncio.run(asyncio.wait_for(app.run(), 10))
    assert code == 1 and app.failed == ["eta"]
    assert not any(loop.running for loop in app.loops)


def test_a_stop_is_a_clean_exit_even_when_producers_finish_with_the_stopper():
    # Producers wake on the same stop event as the stopper and often end in the same loop iteration.
    async def once():
        FakeProducer.fail_starts, FakeProducer.deliver_error = 0, None
        cfg = parse_config(["--rate-tfd", "200", "--rate-eta", "200", "--rate-ecci", "200", "--seed", "1"],
                           {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
        app = App(cfg, sink=KafkaSink("k:9092", Metrics(), producer_factory=FakeProducer))
        task = asyncio.create_task(app.run())
        await asyncio.sleep(0.02)
        app.stop.set()
        return await asyncio.wait_for(task, 10), app.failed

    assert [asyncio.run(once()) for _ in range(30)] == [(0, [])] * 30


def test_health_server_serves_health_and_metrics():
    metrics = Metrics()
    metrics.sent.labels("t").inc()
    server = HealthServer("127.0.0.1", 0, metrics, lambda: {"status": "alive", "kafka_connected": False}).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert json.load(urllib.request.urlopen(f"{base}/health")) == {"status": "alive", "kafka_connected": False}
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'kafka_producer_messages_sent_total{topic="t"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/nope")
    finally:
        server.stop()


def _get_json(url, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.load(urllib.request.urlopen(url, timeout=2))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _start_process(env_extra):
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "METRICS_PORT": str(port), **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "producers"], cwd=APP_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/health"


def test_process_stays_alive_without_a_broker_and_stops_cleanly_on_sigterm():
    proc, health_url = _start_process({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                                       "KAFKA_MAX_BACKOFF_SECONDS": "1"})
    try:
        health = _get_json(health_url)
        assert health["status"] == "alive" and health["kafka_connected"] is False
        time.sleep(2)
        assert proc.poll() is None and _get_json(health_url)["connection_attempts"] >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_process_produces_to_a_real_broker_and_flushes_on_sigterm(kafka_broker):
    run = uuid.uuid4().hex[:8]
    topics = {k: f"{k}-{run}" for k in ("tfd", "eta", "ecci")}
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_broker, "PRODUCER_SEED": "42", "PRODUCER_RATE_TFD": "40",
           "PRODUCER_RATE_ETA": "20", "PRODUCER_RATE_ECCI": "40"}
    env |= {f"KAFKA_TOPIC_{k.upper()}": t for k, t in topics.items()}
    proc, health_url = _start_process(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            health = _get_json(health_url)
            if health["kafka_connected"] and all(p["delivered"] >= 10 for p in health["producers"].values()):
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def consume(topic, expect_at_least):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker, group_id=f"check-{run}-{topic}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            records = []
            deadline = time.monotonic() + 30
            while len(records) < expect_at_least and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                records += [r for rs in batch.values() for r in rs]
            return records
        finally:
            await consumer.stop()

    tfd = asyncio.run(consume(topics["tfd"], 10))
    assert len(tfd) >= 10
    events = [json.loads(r.value) for r in tfd]
    assert all(len(e) == 17 and r.key.decode() == e["user_id"] for e, r in zip(events, tfd))
    ecci = asyncio.run(consume(topics["ecci"], 10))
    assert all(r.key.decode() == json.loads(r.value)["session_id"] for r in ecci)
