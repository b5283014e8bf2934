"""The run queue of dagster.yaml (``run_coordinator``): Dagster's QueuedRunCoordinator, dequeuing
every half second if asked.

Every delivery run waits in the queue until the daemon's next dequeue: that is what keeps one
manifest writer at a time (the ``coelho/manifest-writer`` tag limit), and on average half the
dequeue interval of every push's start. Dagster's coordinator takes whole seconds only, so its
shortest interval is 1 s; this one also takes fractions, down to ``MIN_DEQUEUE_INTERVAL_SECONDS``
(the daemon waits in half-second steps, so a shorter one would be no sooner). Everything else is
Dagster's, configured the same way. Only Dagster is imported here (every Dagster process loads it).
"""

from collections.abc import Mapping
from typing import Any

from dagster import Field, Float
from dagster._config import UserConfigSchema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes import ConfigurableClassData

MIN_DEQUEUE_INTERVAL_SECONDS = 0.5


class RunQueue(QueuedRunCoordinator):
    """QueuedRunCoordinator whose ``dequeue_interval_seconds`` may be a fraction (at least 0.5)."""

    def __init__(self, *, dequeue_interval_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dequeue_interval_seconds is not None:
            if dequeue_interval_seconds < MIN_DEQUEUE_INTERVAL_SECONDS:
                raise ValueError(
                    f"dagster.yaml: run_coordinator.config.dequeue_interval_seconds is {dequeue_interval_seconds:g}; "
                    f"at least {MIN_DEQUEUE_INTERVAL_SECONDS:g} (the daemon waits in half-second steps)")
            self._dequeue_interval_seconds = dequeue_interval_seconds  # type: ignore[assignment]

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        return self._dequeue_interval_seconds

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        schema = dict(super().config_type())  # type: ignore[arg-type]
        schema["dequeue_interval_seconds"] = Field(
            Float, is_required=False,
            description=f"Seconds between the daemon's dequeues, fractions allowed (at least "
                        f"{MIN_DEQUEUE_INTERVAL_SECONDS:g}; Dagster's default 5).")
        return schema

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,  # type: ignore[override]
                          config_value: Mapping[str, Any]) -> "RunQueue":
        return cls(inst_data=inst_data, **config_value)
