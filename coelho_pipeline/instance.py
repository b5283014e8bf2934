"""The Dagster instance of coelho-pipeline's processes (dagster.yaml: ``instance_class``).

A delivery is one run of one dynamic partition (the source commit), and Dagster asks the instance
whether that partition exists for every output and input of every step: 54 storage queries in a
3-app delivery, more with each app, each on a new connection (5 ms on sqlite, 30 ms on PostgreSQL),
for an answer that does not change during the run. This instance remembers a partition it has
found for a short while. A partition it deletes itself is forgotten at once; one deleted by another
process (the UI, ``dagster instance``) may still be believed here for at most
``PARTITION_MEMORY_SECONDS``; a partition that does not exist is never remembered, so a new one is
seen as soon as it is added. That window matters only in the long-lived processes: a sensor request
for a partition deleted elsewhere seconds before is not added again by the daemon, and its run fails
saying the partition does not exist; a delivery whose partition is deleted while it runs finishes.

Only Dagster is imported here: every Dagster process loading the instance (webserver, daemon, code
server, run worker) imports this module.
"""

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import AbstractSet, Any

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

PARTITION_MEMORY_SECONDS = 30.0
MAX_REMEMBERED_PARTITIONS = 1024


class DeliveryInstance(DagsterInstance):
    """A DagsterInstance that remembers, for ``PARTITION_MEMORY_SECONDS``, a dynamic partition it found."""

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._partitions_found: dict[tuple[str, str], float] = {}
        # Bumped before and after each deletion made here: an answer read from the storage while a
        # deletion was under way is not remembered, so a deleted partition is never believed again.
        self._partition_deletions = 0
        self._partitions_lock = threading.Lock()

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return InstanceRef.config_defaults(base_dir)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in self.get_existing_dynamic_partitions(partitions_def_name, [partition_key])

    def get_existing_dynamic_partitions(self, partitions_def_name: str,
                                        partition_keys: Sequence[str]) -> AbstractSet[str]:
        now = self.clock()
        with self._partitions_lock:
            remembered = {key for key in partition_keys
                          if now - self._partitions_found.get((partitions_def_name, key), -math.inf)
                          < PARTITION_MEMORY_SECONDS}
            deletions = self._partition_deletions
        unknown = [key for key in partition_keys if key not in remembered]
        if not unknown:
            return remembered
        found = set(super().get_existing_dynamic_partitions(partitions_def_name, unknown))
        self._remember(partitions_def_name, found, now, deletions)
        return remembered | found

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._forget(partitions_def_name, partition_key)
        try:
            super().delete_dynamic_partition(partitions_def_name, partition_key)
        finally:
            self._forget(partitions_def_name, partition_key)

    def _remember(self, partitions_def_name: str, keys: AbstractSet[str], asked_at: float, deletions: int) -> None:
        with self._partitions_lock:
            if deletions != self._partition_deletions:
                return
            if len(self._partitions_found) >= MAX_REMEMBERED_PARTITIONS:  # long-lived processes
                self._partitions_found = {k: t for k, t in self._partitions_found.items()
                                          if asked_at - t < PARTITION_MEMORY_SECONDS}
            for key in keys:
                self._partitions_found[(partitions_def_name, key)] = asked_at

    def _forget(self, partitions_def_name: str, partition_key: str) -> None:
        with self._partitions_lock:
            self._partition_deletions += 1
            self._partitions_found.pop((partitions_def_name, partition_key), None)
