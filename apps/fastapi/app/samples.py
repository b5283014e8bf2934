"""One realistic sample event per case (for the dashboard's "try it" and for API users)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import datetime, timezone
from typing import Any, Callable


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def sample_tfd(rng: random.Random) -> dict[str, Any]:
    return {
        "transaction_id": _id(rng), "user_id": f"user_{rng.randint(1000, 9999)}", "timestamp": _now(),
        "amount": round(rng.lognormvariate(3.8, 0.9), 2), "currency": "USD",
        "merchant_id": f"merchant_{rng.randint(1, 200)}",
        "product_category": rng.choice(["electronics", "groceries", "fashion", "travel", "home"]),
        "transaction_type": rng.choice(["purchase", "purchase", "refund", "transfer"]),
        "payment_method": rng.choice(["credit_card", "debit_card", "paypal", "bank_transfer"]),
        "location": {"lat": round(rng.uniform(29.5, 30.1), 5), "lon": round(rng.uniform(-95.8, -95.0), 5)},
        "ip_address": ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "device_info": {"os": rng.choice(["Android", "iOS", "Windows", "macOS"]),
                        "browser": rng.choice(["Chrome", "Safari", "Firefox", "Edge"])},
        "user_agent": "Mozilla/5.0", "account_age_days": rng.randint(0, 3650),
        "cvv_provided": True, "billing_address_match": True,
    }


def sample_eta(rng: random.Random) -> dict[str, Any]:
    o = (rng.uniform(29.6, 30.0), rng.uniform(-95.6, -95.1))
    d = (rng.uniform(29.6, 30.0), rng.uniform(-95.6, -95.1))
    km = 6371 * 2 * math.asin(math.sqrt(
        math.sin(math.radians(d[0] - o[0]) / 2) ** 2
        + math.cos(math.radians(o[0])) * math.cos(math.radians(d[0])) * math.sin(math.radians(d[1] - o[1]) / 2) ** 2))
    now = datetime.now(timezone.utc)
    return {
        "trip_id": _id(rng), "driver_id": f"driver_{rng.randint(1000, 5000)}",
        "vehicle_id": f"vehicle_{rng.randint(100, 999)}", "timestamp": now.isoformat(),
        "origin": {"lat": round(o[0], 5), "lon": round(o[1], 5)},
        "destination": {"lat": round(d[0], 5), "lon": round(d[1], 5)},
        "estimated_distance_km": round(km, 2), "weather": rng.choice(["Clear", "Clouds", "Rain"]),
        "temperature_celsius": round(rng.uniform(10, 35), 1), "day_of_week": now.weekday(),
        "hour_of_day": now.hour, "driver_rating": round(rng.uniform(3.5, 5.0), 1),
        "vehicle_type": rng.choice(["Sedan", "SUV", "Hatchback"]),
        "initial_estimated_travel_time_seconds": round(max(km, 0.5) / 40 * 3600, 1),
    }


def sample_ecci(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["page_view", "page_view", "add_to_cart", "search", "purchase"])
    product = kind in ("page_view", "add_to_cart", "purchase")
    return {
        "event_id": _id(rng), "customer_id": f"customer_{rng.randint(1, 5000)}", "session_id": _id(rng),
        "timestamp": _now(), "event_type": kind,
        "product_id": f"prod_{rng.randint(1000, 1999)}" if product else None,
        "product_category": rng.choice(["Electronics", "Books", "Fashion"]) if product else None,
        "price": round(rng.uniform(5, 500), 2) if product else None,
        "quantity": rng.randint(1, 3) if kind in ("add_to_cart", "purchase") else None,
        "page_url": "https://shop.example/products", "referrer_url": None,
        "device_info": {"device_type": rng.choice(["Desktop", "Mobile", "Tablet"]),
                        "browser": "Chrome", "os": "Android"},
        "location": {"lat": round(rng.uniform(29.5, 30.1), 5), "lon": round(rng.uniform(-95.8, -95.0), 5)},
        "time_on_page_seconds": round(rng.expovariate(1 / 45), 1),
        "search_query": "wireless headphones" if kind == "search" else None,
        "session_event_sequence": rng.randint(1, 8),
    }


SAMPLERS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "tfd": sample_tfd, "eta": sample_eta, "ecci": sample_ecci,
}
