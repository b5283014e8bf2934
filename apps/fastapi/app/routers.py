"""One router per case: /api/v1/{tfd,eta,ecci}/{predict,learn,status,metrics,sample,predictions}.

Handlers are ``async def`` on purpose: they then run on the event loop, like the Kafka consumers,
so a River model is never touched from two threads at once.
"""

import random
from typing import Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from .learners import OnlineCase
from .samples import SAMPLERS
from .telemetry import Telemetry


def case_router(case: OnlineCase, topic: str, telemetry: Telemetry) -> APIRouter:
    schema = case.schema
    router = APIRouter(prefix=f"/api/v1/{case.key}", tags=[case.title])
    rng = random.Random()

    @router.post("/predict", summary=f"Predict one {case.title} event")
    async def predict(event: schema) -> dict[str, Any]:  # type: ignore[valid-type]
        telemetry.predictions.labels(case.key).inc()
        return {"case": case.key, "model": case.model_name, "samples_learned": case.samples_learned,
                "prediction": case.predict(event)}

    @router.post("/learn", summary="Learn one labelled event (predict first, then learn)")
    async def learn(event: schema) -> dict[str, Any]:  # type: ignore[valid-type]
        if case.target_field and case.target(event) is None:
            raise RequestValidationError([{"type": "missing", "loc": ("body", case.target_field),
                                           "msg": "Field required", "input": None}])
        prediction = case.learn(event)
        telemetry.learned_api.labels(case.key).inc()
        return {"case": case.key, "learned": True, "prediction_before_learning": prediction,
                "samples_learned": case.samples_learned}

    @router.get("/status", summary="Model status and progressive metrics")
    async def status() -> dict[str, Any]:
        return {**case.status(), "topic": topic}

    @router.get("/metrics", summary="Progressive validation metrics only")
    async def model_metrics() -> dict[str, Any]:
        return {"case": case.key, "samples_learned": case.samples_learned, "metrics": case.metric_values()}

    @router.get("/sample", summary="A realistic sample event, valid for /predict")
    async def sample(seed: int | None = Query(default=None)) -> dict[str, Any]:
        return SAMPLERS[case.key](random.Random(seed) if seed is not None else rng)

    @router.get("/predictions", summary="The most recent predictions made while learning")
    async def predictions(limit: int = Query(default=20, ge=1, le=50)) -> dict[str, Any]:
        return {"case": case.key, "items": list(case.recent)[:limit]}

    return router
