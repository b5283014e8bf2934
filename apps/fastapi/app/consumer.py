"""The Kafka boundary: one consumer per topic feeding the case's online learner.

``handle`` (bytes in, learner updated) holds all the logic and is tested without a broker;
``run`` is the thin loop around aiokafka's ``AIOKafkaConsumer`` (tested against a real broker).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from .learners import OnlineCase
from .telemetry import Telemetry

log = logging.getLogger("app.consumer")


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())


class TopicConsumer:
    def __init__(
        self,
        case: OnlineCase,
        topic: str,
        bootstrap_servers: str,
        telemetry: Telemetry,
        *,
        group_id: str,
        auto_offset_reset: str = "earliest",
        on_learned: Callable[[OnlineCase], Awaitable[None]] | None = None,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
        max_backoff: float = 30.0,
    ) -> None:
        self.case, self.topic, self.bootstrap_servers = case, topic, bootstrap_servers
        self.telemetry, self.group_id, self.auto_offset_reset = telemetry, group_id, auto_offset_reset
        self.on_learned, self.consumer_factory, self.max_backoff = on_learned, consumer_factory, max_backoff
        self.connected = False
        self.last_error: str | None = None
        self.consumed = 0
        self.invalid = 0

    def handle(self, value: bytes | None) -> bool:
        """Decode, validate and learn one message. Invalid messages are logged and counted, never fatal."""
        try:
            event = self.case.schema.model_validate(json.loads(value or b""))
            self.case.learn(event)
        except ValidationError as exc:
            return self._reject(describe_validation_error(exc))
        except ValueError as exc:  # bad JSON (JSONDecodeError is a ValueError) or a missing target
            return self._reject(str(exc))
        self.consumed += 1
        self.telemetry.events_consumed.labels(self.case.key).inc()
        return True

    def _reject(self, reason: str) -> bool:
        self.invalid += 1
        self.telemetry.events_invalid.labels(self.case.key, "kafka").inc()
        log.warning("invalid event on %s skipped: %s", self.topic, reason)
        return False

    def status(self) -> dict[str, Any]:
        return {"topic": self.topic, "connected": self.connected, "consumed": self.consumed,
                "invalid": self.invalid, "last_error": self.last_error}

    async def run(self) -> None:
        """Consume until cancelled; reconnect with exponential backoff when the broker is unreachable."""
        backoff = min(1.0, self.max_backoff)
        while True:
            consumer = self.consumer_factory(
                self.topic,
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group_id,
                client_id=f"{self.group_id}-{self.case.key}",
                auto_offset_reset=self.auto_offset_reset,
                enable_auto_commit=True,
            )
            try:
                await consumer.start()
                self.connected, self.last_error, backoff = True, None, min(1.0, self.max_backoff)
                log.info("consuming %s (group %s)", self.topic, self.group_id)
                async for message in consumer:
                    if self.handle(message.value) and self.on_learned is not None:
                        await self.on_learned(self.case)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any client failure means: reconnect later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer for %s failed (%s); retrying in %.0fs", self.topic, self.last_error, backoff)
            finally:
                self.connected = False
                with suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
