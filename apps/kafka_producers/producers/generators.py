"""Seeded event generators for the three topics, with the original producers' field sets.

Every generator draws from its own ``random.Random`` and reads time from an injectable clock, so a
fixed seed and a fixed clock give the exact same stream (the tests rely on that).
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

Clock = Callable[[], datetime]
Event = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _weighted(rng: random.Random, table: dict[str, float]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


# Greater Houston: the bounding box the original ETA producer used.
HOUSTON = {"lat_min": 29.5, "lat_max": 30.1, "lon_min": -95.8, "lon_max": -95.0}


def houston_point(rng: random.Random) -> dict[str, float]:
    return {"lat": round(rng.uniform(HOUSTON["lat_min"], HOUSTON["lat_max"]), 6),
            "lon": round(rng.uniform(HOUSTON["lon_min"], HOUSTON["lon_max"]), 6)}


def haversine_km(a: dict[str, float], b: dict[str, float]) -> float:
    lat1, lat2 = math.radians(a["lat"]), math.radians(b["lat"])
    dlat, dlon = lat2 - lat1, math.radians(b["lon"] - a["lon"])
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


BROWSERS = {"Chrome": 0.62, "Safari": 0.2, "Edge": 0.08, "Firefox": 0.07, "Opera": 0.03}
OS_TABLE = {"Android": 0.38, "iOS": 0.27, "Windows": 0.25, "macOS": 0.08, "Linux": 0.02}
USER_AGENTS = {
    "Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) {b} Mobile",
    "iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) {b}",
    "Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) {b}",
    "macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) {b}",
    "Linux": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) {b}",
}


@dataclass
class TransactionGenerator:
    """``transaction_fraud_detection``: card transactions, a small share of them fraudulent.

    Fraud looks like fraud: mostly high amounts, brand-new accounts, missing CVV, billing mismatch,
    night hours and locations outside the Houston area; legitimate traffic rarely does.
    """

    rng: random.Random
    clock: Clock = utc_now
    fraud_probability: float = 0.01
    account_age_days_limit: int = 5
    merchant_id_limit: int = 200
    cvv_provided_missing_probability: float = 0.05
    billing_address_match_missing_probability: float = 0.1
    high_value_fraud_probability: float = 0.8
    users: int = 5000
    produced: int = field(default=0, init=False)
    frauds: int = field(default=0, init=False)

    CATEGORIES = {"groceries": 0.25, "electronics": 0.15, "fashion": 0.15, "home": 0.12, "restaurants": 0.13,
                  "travel": 0.06, "health": 0.08, "entertainment": 0.06}
    TYPES = {"purchase": 0.85, "refund": 0.04, "transfer": 0.06, "withdrawal": 0.05}
    METHODS = {"credit_card": 0.45, "debit_card": 0.3, "paypal": 0.12, "apple_pay": 0.08, "bank_transfer": 0.05}
    CURRENCIES = {"USD": 0.93, "EUR": 0.03, "MXN": 0.02, "GBP": 0.01, "CAD": 0.01}

    @property
    def fraud_ratio(self) -> float:
        return self.frauds / self.produced if self.produced else 0.0

    def next_event(self) -> Event:
        rng = self.rng
        fraud = rng.random() < self.fraud_probability
        now = self.clock()
        if fraud:
            high = rng.random() < self.high_value_fraud_probability
            amount = rng.uniform(800, 5000) if high else rng.lognormvariate(3.8, 0.9)
            age = rng.randint(0, self.account_age_days_limit) if rng.random() < 0.7 else rng.randint(0, 3650)
            cvv = rng.random() > 0.5
            billing = rng.random() > 0.5
            location = {"lat": round(rng.uniform(-60, 70), 6), "lon": round(rng.uniform(-180, 180), 6)} \
                if rng.random() < 0.6 else houston_point(rng)
            if rng.random() < 0.4:  # a good part of fraud happens at night
                now = now.replace(hour=rng.randint(0, 5))
        else:
            amount = min(rng.lognormvariate(3.8, 0.9), 4000.0)
            age = rng.randint(self.account_age_days_limit + 1, 3650) if rng.random() < 0.97 \
                else rng.randint(0, self.account_age_days_limit)
            cvv = rng.random() >= self.cvv_provided_missing_probability
            billing = rng.random() >= self.billing_address_match_missing_probability
            location = houston_point(rng)
        os_name, browser = _weighted(rng, OS_TABLE), _weighted(rng, BROWSERS)
        self.produced += 1
        self.frauds += fraud
        return {
            "transaction_id": _uuid(rng),
            "user_id": f"user_{rng.randint(1, self.users)}",
            "timestamp": now.isoformat(),
            "amount": round(amount, 2),
            "currency": _weighted(rng, self.CURRENCIES) if not fraud or rng.random() < 0.5 else "USD",
            "merchant_id": f"merchant_{rng.randint(1, self.merchant_id_limit)}",
            "product_category": _weighted(rng, self.CATEGORIES),
            "transaction_type": _weighted(rng, self.TYPES),
            "payment_method": _weighted(rng, self.METHODS),
            "location": location,
            "ip_address": ".".join(str(rng.randint(1, 254)) for _ in range(4)),
            "device_info": {"os": os_name, "browser": browser},
            "user_agent": USER_AGENTS[os_name].format(b=browser),
            "account_age_days": age,
            "cvv_provided": cvv,
            "billing_address_match": billing,
            "is_fraud": int(fraud),
        }

    def key(self, event: Event) -> str:
        return event["user_id"]


@dataclass
class TripGenerator:
    """``estimated_time_of_arrival``: Houston-area trips; the target is the simulated actual time."""

    rng: random.Random
    clock: Clock = utc_now
    heavy_traffic_multiplier: float = 2.0
    bad_weather_probability: float = 0.1
    incident_probability: float = 0.02
    drivers: int = 1000
    average_speed_kmh: float = 40.0
    produced: int = field(default=0, init=False)

    GOOD_WEATHER = {"Clear": 0.6, "Clouds": 0.4}
    BAD_WEATHER = {"Rain": 0.55, "Heavy Rain": 0.2, "Thunderstorm": 0.15, "Fog": 0.1}
    VEHICLES = {"Sedan": 0.5, "SUV": 0.25, "Hatchback": 0.15, "Van": 0.07, "Pickup": 0.03}
    RUSH_HOURS = frozenset({7, 8, 9, 16, 17, 18})

    def next_event(self) -> Event:
        rng = self.rng
        now = self.clock()
        origin = houston_point(rng)
        destination = houston_point(rng)
        distance = max(haversine_km(origin, destination), 0.5)
        bad = rng.random() < self.bad_weather_probability
        weather = _weighted(rng, self.BAD_WEATHER if bad else self.GOOD_WEATHER)
        rating = round(min(5.0, max(3.0, rng.gauss(4.6, 0.3))), 1)
        hour, day = now.hour, now.weekday()
        road_factor = 1.3  # streets are not straight lines
        initial = distance * road_factor / self.average_speed_kmh * 3600
        if hour in self.RUSH_HOURS and day < 5:
            traffic = rng.uniform(1.3, self.heavy_traffic_multiplier)
        elif hour < 6 or hour >= 22:
            traffic = rng.uniform(0.75, 0.95)
        else:
            traffic = rng.uniform(0.95, 1.25)
        weather_factor = {"Rain": 1.15, "Heavy Rain": 1.35, "Thunderstorm": 1.5, "Fog": 1.25}.get(weather, 1.0)
        weather_factor *= rng.uniform(0.97, 1.05)
        incident = rng.uniform(300, 1800) if rng.random() < self.incident_probability else 0.0
        driver_factor = 1.0 + (4.6 - rating) * 0.08 + rng.gauss(0, 0.03)
        actual = max(60.0, initial * traffic * weather_factor * driver_factor + incident + rng.gauss(0, 30))
        month_temp = 20 + 9 * math.sin((now.timetuple().tm_yday - 105) / 365 * 2 * math.pi)
        self.produced += 1
        return {
            "trip_id": _uuid(rng),
            "driver_id": f"driver_{rng.randint(1, self.drivers)}",
            "vehicle_id": f"vehicle_{rng.randint(1, self.drivers * 2)}",
            "timestamp": now.isoformat(),
            "origin": origin,
            "destination": destination,
            "estimated_distance_km": round(distance, 2),
            "weather": weather,
            "temperature_celsius": round(month_temp + rng.gauss(0, 4), 1),
            "day_of_week": day,
            "hour_of_day": hour,
            "driver_rating": rating,
            "vehicle_type": _weighted(rng, self.VEHICLES),
            "initial_estimated_travel_time_seconds": round(initial, 1),
            "simulated_actual_travel_time_seconds": round(actual, 1),
            "debug_traffic_factor": round(traffic, 4),
            "debug_weather_factor": round(weather_factor, 4),
            "debug_incident_delay_seconds": round(incident, 1),
            "debug_driver_factor": round(driver_factor, 4),
        }

    def key(self, event: Event) -> str:
        return event["driver_id"]


@dataclass
class _Session:
    session_id: str
    customer_id: str
    device: dict[str, str]
    location: dict[str, float]
    last_seen: datetime
    sequence: int = 0
    state: str = "start"
    page_url: str | None = None
    product: tuple[str, str, float] | None = None


@dataclass
class InteractionGenerator:
    """``e_commerce_customer_interactions``: events of customer sessions, each a Markov walk.

    A session starts with a page view or a search, then moves between views, searches, carts and
    purchases; ``session_event_sequence`` counts its events. At most ``max_sessions`` are open at
    once and a session idle for ``session_timeout`` is closed, as in the original.
    """

    rng: random.Random
    clock: Clock = utc_now
    max_sessions: int = 500
    session_timeout: timedelta = timedelta(minutes=15)
    new_session_probability: float = 0.15
    customers: int = 5000
    produced: int = field(default=0, init=False)
    sessions: dict[str, _Session] = field(default_factory=dict, init=False)

    TRANSITIONS: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "start": {"page_view": 0.7, "search": 0.3},
        "page_view": {"page_view": 0.42, "add_to_cart": 0.2, "search": 0.18, "leave_review": 0.03, "end": 0.17},
        "search": {"page_view": 0.7, "search": 0.15, "end": 0.15},
        "add_to_cart": {"purchase": 0.35, "page_view": 0.35, "add_to_cart": 0.05, "end": 0.25},
        "purchase": {"leave_review": 0.15, "page_view": 0.25, "end": 0.6},
        "leave_review": {"page_view": 0.4, "end": 0.6},
    }, init=False, repr=False)
    CATEGORIES = {"Electronics": (25, 1200), "Books": (5, 60), "Fashion": (10, 250), "Home & Kitchen": (8, 400),
                  "Beauty": (5, 90), "Sports": (10, 300), "Toys": (5, 120)}
    QUERIES = ["wireless headphones", "running shoes", "coffee maker", "laptop stand", "yoga mat",
               "kids toys", "face cream", "fantasy novel", "air fryer", "phone case"]
    DEVICES = {"Mobile": 0.55, "Desktop": 0.35, "Tablet": 0.10}
    REFERRERS = {"https://www.google.com/": 0.5, "https://www.facebook.com/": 0.15,
                 "https://www.instagram.com/": 0.1, "": 0.25}

    def _new_session(self, now: datetime) -> _Session:
        rng = self.rng
        device_type = _weighted(rng, self.DEVICES)
        os_name = _weighted(rng, {"Android": 0.55, "iOS": 0.45}) if device_type != "Desktop" \
            else _weighted(rng, {"Windows": 0.7, "macOS": 0.25, "Linux": 0.05})
        session = _Session(
            session_id=_uuid(rng), customer_id=f"customer_{rng.randint(1, self.customers)}",
            device={"device_type": device_type, "browser": _weighted(rng, BROWSERS), "os": os_name},
            location=houston_point(rng), last_seen=now,
        )
        if len(self.sessions) >= self.max_sessions:  # close the least recently active session
            oldest = min(self.sessions.values(), key=lambda s: s.last_seen)
            del self.sessions[oldest.session_id]
        self.sessions[session.session_id] = session
        return session

    def _expire(self, now: datetime) -> None:
        for sid in [sid for sid, s in self.sessions.items() if now - s.last_seen > self.session_timeout]:
            del self.sessions[sid]

    def _product(self) -> tuple[str, str, float]:
        category = self.rng.choice(list(self.CATEGORIES))
        low, high = self.CATEGORIES[category]
        price = round(min(high, max(low, self.rng.lognormvariate(math.log((low * high) ** 0.5), 0.5))), 2)
        return f"prod_{self.rng.randint(1000, 9999)}", category, price

    def next_event(self) -> Event:
        rng = self.rng
        now = self.clock()
        self._expire(now)
        while True:
            if not self.sessions or rng.random() < self.new_session_probability:
                session = self._new_session(now)
            else:
                session = self.sessions[rng.choice(list(self.sessions))]
            kind = _weighted(rng, self.TRANSITIONS[session.state])
            if kind != "end":
                break
            del self.sessions[session.session_id]
        session.sequence += 1
        session.state = kind
        session.last_seen = now
        referrer = session.page_url if session.sequence > 1 else (_weighted(rng, self.REFERRERS) or None)
        product, query, quantity = None, None, None
        if kind == "page_view":
            session.product = product = self._product()
        elif kind in ("add_to_cart", "purchase", "leave_review"):
            product = session.product = session.product or self._product()
            if kind != "leave_review":
                quantity = 1 if rng.random() < 0.75 else rng.randint(2, 4)
        else:  # search
            query = rng.choice(self.QUERIES)
        path = {"page_view": f"products/{product[0]}" if product else "", "search": f"search?q={query}",
                "add_to_cart": "cart", "purchase": "checkout/complete", "leave_review": "reviews/new"}[kind]
        session.page_url = f"https://shop.coelho-realtime.example/{path.replace(' ', '+')}"
        mean_seconds = {"page_view": 45, "search": 15, "add_to_cart": 10, "purchase": 60, "leave_review": 90}[kind]
        self.produced += 1
        return {
            "event_id": _uuid(rng),
            "customer_id": session.customer_id,
            "session_id": session.session_id,
            "timestamp": now.isoformat(),
            "event_type": kind,
            "product_id": product[0] if product else None,
            "product_category": product[1] if product else None,
            "price": product[2] if product else None,
            "quantity": quantity,
            "page_url": session.page_url,
            "referrer_url": referrer,
            "device_info": dict(session.device),
            "location": dict(session.location),
            "time_on_page_seconds": round(rng.expovariate(1 / mean_seconds), 1),
            "search_query": query,
            "session_event_sequence": session.sequence,
        }

    def key(self, event: Event) -> str:
        return event["session_id"]  # one session's events stay in order on one partition
