import asyncio

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.store import MemoryStore, RedisStore

from .streams import trip_stream


class FakeRedis:
    """The three calls RedisStore makes on a redis.asyncio client."""

    def __init__(self):
        self.data, self.closed = {}, False

    async def get(self, key):
        return self.data.get(key)

    async def set(self, key, value):
        self.data[key] = value

    async def aclose(self):
        self.closed = True


def test_redis_store_keys_and_round_trip():
    store = RedisStore("redis://127.0.0.1:1/0")  # the client connects lazily: nothing is contacted here
    store._client = fake = FakeRedis()

    async def scenario():
        await store.save("eta", b"blob")
        assert await store.load("eta") == b"blob" and await store.load("tfd") is None
        await store.close()

    asyncio.run(scenario())
    assert fake.data == {"coelho:model:eta": b"blob"} and fake.closed


def test_models_survive_a_restart_through_the_store():
    store = MemoryStore()
    with TestClient(create_app(Settings(), store=store, consume=False)) as c:
        for event in trip_stream(4, 25):
            assert c.post("/api/v1/eta/learn", json=event).status_code == 200
    with TestClient(create_app(Settings(), store=store, consume=False)) as c:
        status = c.get("/api/v1/eta/status").json()
    assert status["samples_learned"] == 25 and status["restored_from"] == "snapshot"


class BrokenStore(MemoryStore):
    async def load(self, key):
        raise ConnectionError("redis down")

    async def save(self, key, blob):
        raise ConnectionError("redis down")


def test_a_broken_store_does_not_keep_the_models_away():
    with TestClient(create_app(Settings(), store=BrokenStore(), consume=False)) as c:
        ready = c.get("/health/ready").json()
        assert c.post("/api/v1/eta/predict", json=c.get("/api/v1/eta/sample").json()).status_code == 200
    assert ready["models"]["eta"]["loaded"] is True
    assert ready["redis"] == {"enabled": True, "last_error": "ConnectionError: redis down"}
    assert not any("redis" in m for m in ready["missing"])
