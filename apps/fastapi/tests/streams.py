"""Seeded synthetic streams with learnable structure, for the learner tests.

(The producers app has the full generators; apps do not import each other, so the tests keep
a small stand-in with the same fields and the same kind of signal.)
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from app.samples import sample_ecci, sample_eta, sample_tfd

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)  # a Monday


def fraud_stream(seed: int, n: int, rate: float = 0.05) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        event = sample_tfd(rng)
        fraud = rng.random() < rate
        if fraud:
            event["amount"] = round(rng.uniform(800, 5000), 2) if rng.random() < 0.8 else event["amount"]
            event["account_age_days"] = rng.randint(0, 5) if rng.random() < 0.7 else event["account_age_days"]
            event["cvv_provided"] = rng.random() > 0.5
            event["billing_address_match"] = rng.random() > 0.5
        else:
            event["cvv_provided"] = rng.random() > 0.05
            event["billing_address_match"] = rng.random() > 0.1
            event["account_age_days"] = rng.randint(6, 3650)
        event["timestamp"] = (T0 + timedelta(seconds=i)).isoformat()
        event["is_fraud"] = int(fraud)
        yield event


def trip_stream(seed: int, n: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        event = sample_eta(rng)
        hour = rng.randint(0, 23)
        event["hour_of_day"], event["day_of_week"] = hour, rng.randint(0, 6)
        event["weather"] = rng.choices(["Clear", "Clouds", "Rain", "Heavy Rain"], [0.6, 0.3, 0.07, 0.03])[0]
        traffic = rng.uniform(1.3, 2.0) if hour in {7, 8, 9, 16, 17, 18} and event["day_of_week"] < 5 \
            else rng.uniform(0.9, 1.2)
        weather = {"Rain": 1.15, "Heavy Rain": 1.35}.get(event["weather"], 1.0)
        base = event["initial_estimated_travel_time_seconds"]
        event["simulated_actual_travel_time_seconds"] = round(max(60.0, base * traffic * weather
                                                                  + rng.gauss(0, 30)), 1)
        event["timestamp"] = (T0 + timedelta(seconds=i)).isoformat()
        yield event


def interaction_stream(seed: int, n: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield sample_ecci(rng)
