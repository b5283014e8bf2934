"""The run queue of dagster.yaml (``run_coordinator``): Dagster's QueuedRunCoordinator, dequeuing
every half second if asked.

Every delivery run waits in the queue until the daemon's next dequeue: that is what keeps one
manifest writer at a time (the ``coelho/manifest-writer`` tag limit), and on average half the
dequeue interval of every push's start. Dagster's coordinator takes whole seconds only, so its
shortest interval is 1 s; this one also takes fractions, down to ``MIN_DEQUEUE_INTERVAL_SECONDS``
(the daemon waits in half-second steps, so a shorter one would be no sooner), given as a number
or, as Dagster's own settings, ``{env: NAME}``. Everything else is Dagster's, configured the same
way, including its refusal of queue limits set both here and under ``concurrency``. Only Dagster is
imported here (every Dagster process loads it).
"""

import os
from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance, Field, ScalarUnion
from dagster._config import UserConfigSchema
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes import ConfigurableClassData

MIN_DEQUEUE_INTERVAL_SECONDS = 0.5
SETTING = "dagster.yaml: run_coordinator.config"
# The run_coordinator settings Dagster refuses beside a `concurrency: {runs, pools}` section (it
# checks them for its own class name only, so not for this one), as (setting, its sub-setting).
CONCURRENCY_CONFLICTS = (("max_concurrent_runs", None), ("tag_concurrency_limits", None),
                         ("block_op_concurrency_limited_runs", "op_concurrency_slot_buffer"))


class RunQueue(QueuedRunCoordinator):
    """QueuedRunCoordinator whose ``dequeue_interval_seconds`` may be a fraction (at least 0.5)."""

    def __init__(self, *, dequeue_interval_seconds: float | Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._queue_limits_set = [f"{name}.{sub}" if sub else name for name, sub in CONCURRENCY_CONFLICTS
                                  if (kwargs.get(name) if sub is None else (kwargs.get(name) or {}).get(sub))
                                  is not None]
        if dequeue_interval_seconds is not None:
            interval = _seconds(dequeue_interval_seconds)
            if interval < MIN_DEQUEUE_INTERVAL_SECONDS:
                raise ValueError(
                    f"{SETTING}.dequeue_interval_seconds is {interval:g}; "
                    f"at least {MIN_DEQUEUE_INTERVAL_SECONDS:g} (the daemon waits in half-second steps)")
            self._dequeue_interval_seconds = interval  # type: ignore[assignment]

    def register_instance(self, instance: DagsterInstance) -> None:
        concurrency = instance.get_settings("concurrency")
        if self._queue_limits_set and ("runs" in concurrency or "pools" in concurrency):
            raise DagsterInvalidConfigError(
                f"{SETTING} sets {', '.join(self._queue_limits_set)} and dagster.yaml has a `concurrency` section, "
                "which would silently win: set the run queue's limits under `concurrency: runs:` only", [], None)
        super().register_instance(instance)

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        return self._dequeue_interval_seconds

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        schema = dict(super().config_type())  # type: ignore[arg-type]
        schema["dequeue_interval_seconds"] = Field(
            ScalarUnion(scalar_type=float, non_scalar_schema={"env": str}), is_required=False,
            description=f"Seconds between the daemon's dequeues, fractions allowed (at least "
                        f"{MIN_DEQUEUE_INTERVAL_SECONDS:g}; Dagster's default 5), or {{env: NAME}}.")
        return schema

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,  # type: ignore[override]
                          config_value: Mapping[str, Any]) -> "RunQueue":
        return cls(inst_data=inst_data, **config_value)


def _seconds(value: float | Mapping[str, str]) -> float:
    if not isinstance(value, Mapping):
        return float(value)
    name = value["env"]
    text = os.environ.get(name)
    if text is None:
        raise ValueError(f"{SETTING}.dequeue_interval_seconds: the environment variable {name} is not set")
    try:
        return float(text)
    except ValueError:
        # The variable's value is not repeated: an environment variable may hold anything.
        raise ValueError(f"{SETTING}.dequeue_interval_seconds: the environment variable {name} is not a "
                         "number of seconds") from None
