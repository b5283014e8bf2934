"""Pydantic models of the three Kafka event schemas (the original producers' field sets).

The target field of each supervised case (``is_fraud``, ``simulated_actual_travel_time_seconds``)
is optional so the same model validates events sent for prediction; ``/learn`` requires it.
Unknown extra fields are ignored so producers can add fields without breaking consumers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class GeoPoint(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class DeviceInfo(BaseModel):
    os: str = Field(min_length=1)
    browser: str = Field(min_length=1)


class TransactionEvent(_Event):
    """Topic ``transaction_fraud_detection`` (17 fields)."""

    transaction_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    timestamp: datetime
    amount: float = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    merchant_id: str = Field(pattern=r"^merchant_\d+$")
    product_category: str = Field(min_length=1)
    transaction_type: str = Field(min_length=1)
    payment_method: str = Field(min_length=1)
    location: GeoPoint
    ip_address: str = Field(min_length=3)
    device_info: DeviceInfo
    user_agent: str
    account_age_days: int = Field(ge=0)
    cvv_provided: bool
    billing_address_match: bool
    is_fraud: Optional[Literal[0, 1]] = None


class TripEvent(_Event):
    """Topic ``estimated_time_of_arrival`` (19 fields; the ``debug_*`` ones are generator internals)."""

    trip_id: str = Field(min_length=1)
    driver_id: str = Field(min_length=1)
    vehicle_id: str = Field(min_length=1)
    timestamp: datetime
    origin: GeoPoint
    destination: GeoPoint
    estimated_distance_km: float = Field(ge=0)
    weather: str = Field(min_length=1)
    temperature_celsius: float = Field(ge=-60, le=60)
    day_of_week: int = Field(ge=0, le=6)
    hour_of_day: int = Field(ge=0, le=23)
    driver_rating: float = Field(ge=1, le=5)
    vehicle_type: str = Field(min_length=1)
    initial_estimated_travel_time_seconds: float = Field(gt=0)
    simulated_actual_travel_time_seconds: Optional[float] = Field(default=None, gt=0)
    debug_traffic_factor: Optional[float] = None
    debug_weather_factor: Optional[float] = None
    debug_incident_delay_seconds: Optional[float] = None
    debug_driver_factor: Optional[float] = None


class SessionDevice(BaseModel):
    device_type: str = Field(min_length=1)
    browser: str = Field(min_length=1)
    os: str = Field(min_length=1)


class InteractionEvent(_Event):
    """Topic ``e_commerce_customer_interactions`` (16 fields)."""

    event_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    session_id: str = Field(min_length=1)
    timestamp: datetime
    event_type: Literal["page_view", "add_to_cart", "purchase", "search", "leave_review"]
    product_id: Optional[str] = None
    product_category: Optional[str] = None
    price: Optional[float] = Field(default=None, ge=0)
    quantity: Optional[int] = Field(default=None, ge=0)
    page_url: str = Field(min_length=1)
    referrer_url: Optional[str] = None
    device_info: SessionDevice
    location: GeoPoint
    time_on_page_seconds: float = Field(ge=0)
    search_query: Optional[str] = None
    session_event_sequence: int = Field(ge=1)
