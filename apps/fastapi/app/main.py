"""Application factory: routers, health, readiness, Prometheus metrics and the consumer lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .config import Settings
from .consumer import TopicConsumer
from .learners import OnlineCase, build_cases
from .routers import case_router
from .store import RedisStore, SnapshotStore
from .telemetry import Telemetry

log = logging.getLogger("app")
SERVICE = "COELHO RealTime ML service"


class Runtime:
    """Everything the app holds at run time: models, consumers, the optional snapshot store."""

    def __init__(self, settings: Settings, store: SnapshotStore | None) -> None:
        self.settings = settings
        self.cases: dict[str, OnlineCase] = build_cases()
        self.consumers: dict[str, TopicConsumer] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.store = store
        self.store_error: str | None = None
        self.models_loaded = False
        self.telemetry = Telemetry(lambda: (self.cases, self.consumers))

    async def load_models(self) -> None:
        if self.store is not None:
            for key, case in self.cases.items():
                try:
                    blob = await asyncio.wait_for(self.store.load(key), timeout=5)
                    if blob:
                        case.loads(blob, "snapshot")
                        log.info("restored %s model (%d samples)", key, case.samples_learned)
                except Exception as exc:  # noqa: BLE001 - a broken store must not keep the models away
                    self.store_error = f"{type(exc).__name__}: {exc}"
                    log.warning("could not restore %s model: %s; starting fresh", key, self.store_error)
        self.models_loaded = True

    async def save_models(self) -> None:
        if self.store is None:
            return
        for key, case in self.cases.items():
            try:
                await asyncio.wait_for(self.store.save(key, case.dumps()), timeout=5)
            except Exception as exc:  # noqa: BLE001
                self.store_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not save %s model: %s", key, self.store_error)

    async def _after_learn(self, case: OnlineCase) -> None:
        every = self.settings.snapshot_every
        if self.store is not None and every > 0 and case.samples_learned % every == 0:
            try:
                await asyncio.wait_for(self.store.save(case.key, case.dumps()), timeout=5)
            except Exception as exc:  # noqa: BLE001
                self.store_error = f"{type(exc).__name__}: {exc}"

    def start_consumers(self) -> None:
        s = self.settings
        if not s.kafka_bootstrap_servers:
            log.warning("KAFKA_BOOTSTRAP_SERVERS is not set: Kafka consumption disabled")
            return
        for key, case in self.cases.items():
            consumer = TopicConsumer(
                case, s.topics[key], s.kafka_bootstrap_servers, self.telemetry,
                group_id=f"{s.kafka_group_prefix}-{key}", auto_offset_reset=s.kafka_auto_offset_reset,
                on_learned=self._after_learn,
            )
            self.consumers[key] = consumer
            self.tasks.append(asyncio.create_task(consumer.run(), name=f"consume-{key}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        await self.save_models()
        if self.store is not None:
            with suppress(Exception):
                await self.store.close()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        s = self.settings
        missing: list[str] = []
        if not self.models_loaded:
            missing.append("models: not loaded yet")
        if not s.kafka_bootstrap_servers:
            missing.append("kafka: consumption disabled (KAFKA_BOOTSTRAP_SERVERS is not set)")
        else:
            for consumer in self.consumers.values():
                if not consumer.connected:
                    why = f" ({consumer.last_error})" if consumer.last_error else ""
                    missing.append(f"kafka: consumer for topic {consumer.topic} not connected{why}")
        body = {
            "ready": not missing,
            "missing": missing,
            "models": {k: {"loaded": self.models_loaded, "samples_learned": c.samples_learned}
                       for k, c in self.cases.items()},
            "kafka": {"enabled": bool(s.kafka_bootstrap_servers),
                      "consumers": {k: c.status() for k, c in self.consumers.items()}},
            "redis": {"enabled": self.store is not None, "last_error": self.store_error},
        }
        return not missing, body


def create_app(settings: Settings | None = None, *, store: SnapshotStore | None = None,
               consume: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    if store is None and settings.redis_url:
        store = RedisStore(settings.redis_url)
    rt = Runtime(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.load_models()
        if consume:
            rt.start_consumers()
        try:
            yield
        finally:
            await rt.stop()

    app = FastAPI(title=SERVICE, version=__version__, lifespan=lifespan)
    app.state.runtime = rt
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Content-Type"])

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "<unmatched>")
        rt.telemetry.http_requests.labels(request.method, route, str(response.status_code)).inc()
        rt.telemetry.http_latency.labels(route).observe(time.perf_counter() - start)
        return response

    for key, case in rt.cases.items():
        app.include_router(case_router(case, settings.topics[key], rt.telemetry))

    @app.get("/", tags=["service"])
    async def root() -> dict[str, Any]:
        return {"service": SERVICE, "version": __version__,
                "cases": {k: {"title": c.title, "prefix": f"/api/v1/{k}", "topic": settings.topics[k]}
                          for k, c in rt.cases.items()}}

    @app.get("/health", tags=["service"], summary="Liveness: 200 while the process serves")
    async def health() -> dict[str, str]:
        return {"status": "alive", "service": SERVICE}

    @app.get("/health/ready", tags=["service"], summary="Readiness: Kafka consumers connected and models loaded")
    async def ready() -> JSONResponse:
        ok, body = rt.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(rt.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    return app
