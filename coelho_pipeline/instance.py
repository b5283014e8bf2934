"""The Dagster instance of coelho-pipeline's processes (dagster.yaml: ``instance_class``).

A delivery is one run of one dynamic partition (the source commit), and Dagster asks the instance
whether that partition exists for every output and input of every step: 54 storage queries in a
3-app delivery, more with each app, each on a new connection (5 ms on sqlite, 30 ms on PostgreSQL),
for an answer that does not change during the run. This instance remembers a partition it has
found for a short while. A partition it deletes itself is forgotten at once; one deleted by another
process (the UI, ``dagster instance``) may still be believed here for at most
``PARTITION_MEMORY_SECONDS``; a partition that does not exist is never remembered, so a new one is
seen as soon as it is added.

Only Dagster is imported here: every Dagster process loading the instance (webserver, daemon, code
server, run worker) imports this module.
"""

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

PARTITION_MEMORY_SECONDS = 30.0


class DeliveryInstance(DagsterInstance):
    """A DagsterInstance that remembers, for ``PARTITION_MEMORY_SECONDS``, a dynamic partition it found."""

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._partitions_found: dict[tuple[str, str], float] = {}
        self._partitions_lock = threading.Lock()

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return InstanceRef.config_defaults(base_dir)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        key = (partitions_def_name, partition_key)
        with self._partitions_lock:
            found_at = self._partitions_found.get(key)
        if found_at is not None and self.clock() - found_at < PARTITION_MEMORY_SECONDS:
            return True
        exists = super().has_dynamic_partition(partitions_def_name, partition_key)
        with self._partitions_lock:
            if exists:
                self._partitions_found[key] = self.clock()
            else:
                self._partitions_found.pop(key, None)
        return exists

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        with self._partitions_lock:
            self._partitions_found.pop((partitions_def_name, partition_key), None)
        super().delete_dynamic_partition(partitions_def_name, partition_key)
