"""The Kafka boundary. ``handle`` is tested on bytes; ``run`` against a real broker (Tansu) and
against stand-ins that fail the way aiokafka's consumer does."""

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from fastapi.testclient import TestClient

from app.config import Settings
from app.consumer import TopicConsumer
from app.learners import FraudDetection
from app.main import create_app
from app.store import MemoryStore
from app.telemetry import Telemetry

from .streams import fraud_stream, interaction_stream, trip_stream


def _consumer(**kw):
    case = FraudDetection()
    return TopicConsumer(case, "transaction_fraud_detection", "127.0.0.1:1",
                         Telemetry(lambda: ({"tfd": case}, {})), group_id="g", **kw)


def test_handle_learns_valid_events_and_counts_invalid_ones(caplog):
    c = _consumer()
    good = next(fraud_stream(1, 1))
    assert c.handle(json.dumps(good).encode()) is True
    assert c.handle(b"{not json") is False
    assert c.handle(json.dumps(good | {"amount": -1}).encode()) is False
    unlabeled = {k: v for k, v in good.items() if k != "is_fraud"}
    assert c.handle(json.dumps(unlabeled).encode()) is False
    assert c.handle(None) is False
    assert (c.consumed, c.invalid, c.case.samples_learned) == (1, 4, 1)
    assert "amount" in caplog.text and "is_fraud is required" in caplog.text
    assert c.telemetry.events_invalid.labels("tfd", "kafka")._value.get() == 4


class _Unreachable:
    starts = 0

    def __init__(self, *topics, **config):
        self.config = config

    async def start(self):
        type(self).starts += 1
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self):
        return None


def test_run_retries_with_backoff_and_reports_the_error():
    c = _consumer(consumer_factory=_Unreachable, max_backoff=0.05)

    async def scenario():
        task = asyncio.create_task(c.run())
        await asyncio.sleep(0.5)
        assert c.connected is False and "Unable to bootstrap" in c.last_error
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert _Unreachable.starts >= 3


async def _produce(bootstrap, topic, events):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, json.dumps(event).encode())
    finally:
        await producer.stop()


def _wait(predicate, timeout=45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_app_consumes_all_three_topics_from_a_real_broker(kafka_broker):
    run = uuid.uuid4().hex[:8]
    topics = {k: f"{k}-{run}" for k in ("tfd", "eta", "ecci")}
    streams = {"tfd": list(fraud_stream(1, 40)), "eta": list(trip_stream(1, 30)),
               "ecci": list(interaction_stream(1, 20))}
    bad = [{"transaction_id": "x"}]  # invalid: must be skipped, not stop the consumer
    asyncio.run(_produce(kafka_broker, topics["tfd"], bad + streams["tfd"]))
    for key in ("eta", "ecci"):
        asyncio.run(_produce(kafka_broker, topics[key], streams[key]))

    store = MemoryStore()
    settings = Settings(kafka_bootstrap_servers=kafka_broker, topics=topics, kafka_group_prefix=f"test-{run}",
                        snapshot_every=10)
    with TestClient(create_app(settings, store=store)) as c:
        assert _wait(lambda: c.get("/health/ready").status_code == 200), c.get("/health/ready").json()
        expected = {k: len(v) for k, v in streams.items()}
        learned = lambda: {k: c.get(f"/api/v1/{k}/status").json()["samples_learned"] for k in topics}  # noqa: E731
        assert _wait(lambda: learned() == expected), learned()
        ready = c.get("/health/ready").json()
        assert ready["kafka"]["consumers"]["tfd"]["invalid"] == 1
        metrics = c.get("/metrics").text
        assert f'coelho_kafka_consumer_connected{{case="tfd",topic="{topics["tfd"]}"}} 1.0' in metrics
        assert 'coelho_events_consumed_total{case="tfd"} 40.0' in metrics
    # the snapshots were written (every 10 events and at shutdown): a restart resumes the models
    assert set(store.data) == {"tfd", "eta", "ecci"}
    with TestClient(create_app(Settings(), store=store, consume=False)) as c:
        status = c.get("/api/v1/tfd/status").json()
    assert status["samples_learned"] == 40 and status["restored_from"] == "snapshot"


def test_readiness_reports_the_client_error_while_the_broker_is_unreachable():
    """The consumers report aiokafka's own error text, so the 503 says why."""
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    with TestClient(create_app(settings)) as c:
        assert _wait(lambda: all(x["last_error"] for x in c.get("/health/ready").json()["kafka"]["consumers"].values()),
                     timeout=20)
        assert c.get("/health/ready").status_code == 503
