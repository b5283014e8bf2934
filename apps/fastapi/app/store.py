"""Optional model snapshots in Redis (``REDIS_URL``): models survive restarts when it is set."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("app.store")


class SnapshotStore(Protocol):
    async def load(self, key: str) -> bytes | None: ...
    async def save(self, key: str, blob: bytes) -> None: ...
    async def close(self) -> None: ...


class RedisStore:
    prefix = "coelho:model:"

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        import redis.asyncio as redis  # imported here: Redis is optional

        self._client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def load(self, key: str) -> bytes | None:
        return await self._client.get(self.prefix + key)

    async def save(self, key: str, blob: bytes) -> None:
        await self._client.set(self.prefix + key, blob)

    async def close(self) -> None:
        await self._client.aclose()


class MemoryStore:
    """A store in memory, for tests and for running without Redis."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def save(self, key: str, blob: bytes) -> None:
        self.data[key] = blob

    async def close(self) -> None:
        return None
