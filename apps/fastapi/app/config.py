"""Settings, read from environment variables only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_TOPICS = {
    "tfd": "transaction_fraud_detection",
    "eta": "estimated_time_of_arrival",
    "ecci": "e_commerce_customer_interactions",
}


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    kafka_bootstrap_servers: str | None = None
    topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    kafka_group_prefix: str = "coelho-fastapi"
    kafka_auto_offset_reset: str = "earliest"
    redis_url: str | None = None
    snapshot_every: int = 500
    cors_origins: list[str] = field(default_factory=list)
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        topics = {case: env.get(f"KAFKA_TOPIC_{case.upper()}", default) or default
                  for case, default in DEFAULT_TOPICS.items()}
        return cls(
            host=env.get("HOST", "0.0.0.0"),
            port=int(env.get("PORT", "8000")),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            topics=topics,
            kafka_group_prefix=env.get("KAFKA_GROUP_PREFIX", "coelho-fastapi"),
            kafka_auto_offset_reset=env.get("KAFKA_AUTO_OFFSET_RESET", "earliest"),
            redis_url=env.get("REDIS_URL") or None,
            snapshot_every=int(env.get("MODEL_SNAPSHOT_EVERY", "500")),
            cors_origins=_split(env.get("CORS_ORIGINS")),
            log_level=env.get("LOG_LEVEL", "info").lower(),
        )
