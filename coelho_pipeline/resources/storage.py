"""Where the assets' values are kept between steps and runs: pickles under the instance's storage.

The layout is the one of Dagster's filesystem IO manager (``<base>/<asset key path>/<partition>``
for an asset, ``<base>/<run id>/<step>/<output>`` for an op's output such as the runbook's), so
values written before this manager existed still load when an old run is re-executed. Unlike that
manager it adds no ``path`` metadata row to every materialization: the path is an internal
detail that only crowds the UI.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

UNPARTITIONED = "__unpartitioned__"


class ValueStore(dg.IOManager):
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        if not context.has_asset_key:
            return self.base_dir.joinpath(*context.get_identifier())
        path = self.base_dir.joinpath(*context.asset_key.path)
        return path / context.asset_partition_key if context.has_asset_partitions else path

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:  # an asset that returns nothing (a check-only result, a skipped output)
            return
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: a worker killed mid-write must not leave a torn pickle.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._path(context)
        if not path.is_file():
            if not context.has_asset_key:
                raise dg.Failure(f"input {context.name} has no stored value ({path})", allow_retries=False)
            where = f" for partition {context.asset_partition_key}" if context.has_asset_partitions else ""
            raise dg.Failure(f"{context.asset_key.to_user_string()} has no stored value{where} ({path}): "
                             "materialize it first (or run the whole deliver_commit job for this commit)",
                             allow_retries=False)
        with path.open("rb") as f:
            return pickle.load(f)


class ValueStoreResource(dg.ConfigurableIOManagerFactory):
    """The IO manager of every asset; ``base_dir`` defaults to the instance's storage directory."""

    base_dir: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> ValueStore:
        if self.base_dir:
            return ValueStore(Path(self.base_dir))
        if context.instance is None:
            raise dg.DagsterInvariantViolationError("ValueStoreResource needs a Dagster instance or a base_dir")
        return ValueStore(Path(context.instance.storage_directory()))
