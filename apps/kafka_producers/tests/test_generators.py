import random
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from producers.generators import (
    HOUSTON, InteractionGenerator, TransactionGenerator, TripGenerator, haversine_km,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)  # a Monday, noon


class Clock:
    def __init__(self, start=T0, step=timedelta(seconds=1)):
        self.now, self.step = start, step

    def __call__(self):
        self.now += self.step
        return self.now


def fixed(at):
    return lambda: at


# The original producers' field sets (coelho-realtime.md §6), in order.
TFD_FIELDS = ["transaction_id", "user_id", "timestamp", "amount", "currency", "merchant_id", "product_category",
              "transaction_type", "payment_method", "location", "ip_address", "device_info", "user_agent",
              "account_age_days", "cvv_provided", "billing_address_match", "is_fraud"]
ETA_FIELDS = ["trip_id", "driver_id", "vehicle_id", "timestamp", "origin", "destination", "estimated_distance_km",
              "weather", "temperature_celsius", "day_of_week", "hour_of_day", "driver_rating", "vehicle_type",
              "initial_estimated_travel_time_seconds", "simulated_actual_travel_time_seconds",
              "debug_traffic_factor", "debug_weather_factor", "debug_incident_delay_seconds", "debug_driver_factor"]
ECCI_FIELDS = ["event_id", "customer_id", "session_id", "timestamp", "event_type", "product_id", "product_category",
               "price", "quantity", "page_url", "referrer_url", "device_info", "location", "time_on_page_seconds",
               "search_query", "session_event_sequence"]


@pytest.mark.parametrize(("cls", "fields"), [(TransactionGenerator, TFD_FIELDS), (TripGenerator, ETA_FIELDS),
                                             (InteractionGenerator, ECCI_FIELDS)])
def test_field_sets_and_determinism(cls, fields):
    gen_a, gen_b = cls(random.Random(42), clock=Clock()), cls(random.Random(42), clock=Clock())
    a = [gen_a.next_event() for _ in range(300)]
    b = [gen_b.next_event() for _ in range(300)]
    assert a == b  # same seed, same clock: same stream
    assert all(list(e) == fields for e in a)
    c = cls(random.Random(43), clock=Clock())
    assert [c.next_event() for _ in range(300)] != a


@pytest.fixture(scope="module")
def transactions():
    gen = TransactionGenerator(random.Random(7), clock=Clock())
    return gen, [gen.next_event() for _ in range(30000)]


def test_fraud_rate_is_about_one_percent(transactions):
    gen, events = transactions
    rate = sum(e["is_fraud"] for e in events) / len(events)
    assert 0.008 <= rate <= 0.012
    assert gen.fraud_ratio == pytest.approx(rate)


def test_fraud_looks_like_fraud(transactions):
    _, events = transactions
    fraud = [e for e in events if e["is_fraud"]]
    legit = [e for e in events if not e["is_fraud"]]
    assert statistics.median(e["amount"] for e in fraud) > 10 * statistics.median(e["amount"] for e in legit)
    assert statistics.mean(e["account_age_days"] <= 5 for e in fraud) > 0.6
    assert statistics.mean(e["account_age_days"] <= 5 for e in legit) < 0.05
    # legitimate: CVV missing about 5 %, billing mismatch about 10 % (the original's arguments)
    assert statistics.mean(not e["cvv_provided"] for e in legit) == pytest.approx(0.05, abs=0.01)
    assert statistics.mean(not e["billing_address_match"] for e in legit) == pytest.approx(0.10, abs=0.01)
    assert statistics.mean(not e["cvv_provided"] for e in fraud) > 0.35


def test_transaction_values_are_well_formed(transactions):
    _, events = transactions
    assert all(e["merchant_id"].startswith("merchant_") and 1 <= int(e["merchant_id"][9:]) <= 200 for e in events)
    assert all(e["amount"] >= 0 and len(e["currency"]) == 3 for e in events)
    assert Counter(e["currency"] for e in events).most_common(1)[0][0] == "USD"
    assert all(datetime.fromisoformat(e["timestamp"]).tzinfo is not None for e in events)


def _trips(n, seed=3, clock=None):
    gen = TripGenerator(random.Random(seed), clock=clock or Clock(step=timedelta(minutes=7)))
    return [gen.next_event() for _ in range(n)]


def test_trips_are_in_houston_and_distances_are_haversine():
    for e in _trips(3000):
        for point in (e["origin"], e["destination"]):
            assert HOUSTON["lat_min"] <= point["lat"] <= HOUSTON["lat_max"]
            assert HOUSTON["lon_min"] <= point["lon"] <= HOUSTON["lon_max"]
        assert e["estimated_distance_km"] == pytest.approx(max(haversine_km(e["origin"], e["destination"]), 0.5),
                                                           abs=0.01)
        assert e["simulated_actual_travel_time_seconds"] >= 60 and 3.0 <= e["driver_rating"] <= 5.0


def test_rush_hour_and_bad_weather_slow_trips_down():
    rush = _trips(1500, clock=fixed(T0.replace(hour=8)))   # Monday 08:00
    calm = _trips(1500, clock=fixed(T0.replace(hour=13)))  # Monday 13:00
    ratio = lambda es: statistics.median(e["debug_traffic_factor"] for e in es)  # noqa: E731
    assert ratio(rush) > 1.3 > ratio(calm)
    assert all(e["hour_of_day"] == 8 and e["day_of_week"] == 0 for e in rush)
    events = _trips(6000)
    bad = [e for e in events if e["weather"] in TripGenerator.BAD_WEATHER]
    assert len(bad) / len(events) == pytest.approx(0.10, abs=0.015)
    assert statistics.mean(e["debug_weather_factor"] for e in bad) > 1.1
    incidents = sum(e["debug_incident_delay_seconds"] > 0 for e in events) / len(events)
    assert incidents == pytest.approx(0.02, abs=0.008)


def _interactions(n, gen=None):
    gen = gen or InteractionGenerator(random.Random(11), clock=Clock())
    return gen, [gen.next_event() for _ in range(n)]


def test_sessions_are_ordered_sequences():
    _, events = _interactions(20000)
    by_session = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(e)
    for session in by_session.values():
        assert [e["session_event_sequence"] for e in session] == list(range(1, len(session) + 1))
        assert len({e["customer_id"] for e in session}) == 1
        assert len({tuple(e["device_info"].values()) for e in session}) == 1
        assert session[0]["event_type"] in ("page_view", "search")
        for prev, cur in zip(session, session[1:]):
            assert cur["referrer_url"] == prev["page_url"]
            if cur["event_type"] in ("add_to_cart", "purchase"):
                assert cur["product_id"] is not None
    lengths = [len(s) for s in by_session.values()]
    assert 2 <= statistics.mean(lengths) <= 12


def test_event_mix_is_a_shopping_funnel():
    _, events = _interactions(20000)
    kinds = Counter(e["event_type"] for e in events)
    assert kinds.most_common(1)[0][0] == "page_view"
    assert kinds["page_view"] > kinds["add_to_cart"] > kinds["purchase"] > 0
    assert kinds["leave_review"] > 0 and kinds["search"] > 0
    for e in events:
        assert (e["search_query"] is not None) == (e["event_type"] == "search")
        assert (e["quantity"] is not None) == (e["event_type"] in ("add_to_cart", "purchase"))


def test_open_sessions_are_capped_and_time_out():
    gen = InteractionGenerator(random.Random(5), clock=Clock(step=timedelta(milliseconds=10)), max_sessions=50)
    for _ in range(5000):
        gen.next_event()
        assert len(gen.sessions) <= 50
    open_before = set(gen.sessions)
    gen.clock = Clock(start=gen.clock.now + timedelta(minutes=16))
    event = gen.next_event()
    assert event["session_id"] not in open_before and not (open_before & set(gen.sessions))
