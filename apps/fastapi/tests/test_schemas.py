import random

import pytest
from pydantic import ValidationError

from app.samples import SAMPLERS
from app.schemas import InteractionEvent, TransactionEvent, TripEvent

SCHEMAS = {"tfd": TransactionEvent, "eta": TripEvent, "ecci": InteractionEvent}
# The original producers' field sets (coelho-realtime.md §6).
FIELD_COUNTS = {"tfd": 17, "eta": 19, "ecci": 16}


@pytest.mark.parametrize("case", SCHEMAS)
def test_schema_has_the_original_field_set(case):
    assert len(SCHEMAS[case].model_fields) == FIELD_COUNTS[case]


@pytest.mark.parametrize("case", SCHEMAS)
def test_samples_are_valid_events(case):
    for seed in range(20):
        SCHEMAS[case].model_validate(SAMPLERS[case](random.Random(seed)))


def _errors(schema, event):
    with pytest.raises(ValidationError) as info:
        schema.model_validate(event)
    return {tuple(err["loc"]) for err in info.value.errors()}


@pytest.mark.parametrize(("case", "change", "loc"), [
    ("tfd", {"amount": -5}, ("amount",)),
    ("tfd", {"merchant_id": "shop-7"}, ("merchant_id",)),
    ("tfd", {"is_fraud": 2}, ("is_fraud",)),
    ("tfd", {"location": {"lat": 95, "lon": 0}}, ("location", "lat")),
    ("tfd", {"timestamp": "yesterday"}, ("timestamp",)),
    ("eta", {"hour_of_day": 24}, ("hour_of_day",)),
    ("eta", {"driver_rating": 7}, ("driver_rating",)),
    ("eta", {"simulated_actual_travel_time_seconds": -1}, ("simulated_actual_travel_time_seconds",)),
    ("ecci", {"event_type": "teleport"}, ("event_type",)),
    ("ecci", {"session_event_sequence": 0}, ("session_event_sequence",)),
    ("ecci", {"device_info": {"device_type": "Mobile"}}, ("device_info", "browser")),
])
def test_invalid_values_name_the_field(case, change, loc):
    event = SAMPLERS[case](random.Random(1)) | change
    assert loc in _errors(SCHEMAS[case], event)


@pytest.mark.parametrize("case", SCHEMAS)
def test_missing_required_field_is_named(case):
    event = SAMPLERS[case](random.Random(1))
    first = next(iter(event))
    del event[first]
    assert (first,) in _errors(SCHEMAS[case], event)


def test_extra_fields_are_ignored_and_targets_optional():
    event = SAMPLERS["tfd"](random.Random(3)) | {"new_field": 1}
    parsed = TransactionEvent.model_validate(event)
    assert parsed.is_fraud is None and not hasattr(parsed, "new_field")
