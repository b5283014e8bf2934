"""One measured figure of the speed benchmarks, next to its target, and the table that prints them."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """``value`` is compared with ``target`` by ``comparison`` ("<=", "<", "==" or "" for information only)."""

    id: str  # "P1", "P2", ... "growth"
    label: str  # what was measured, e.g. "delivery / raw work, trivial image"
    value: float
    unit: str  # "s", "x", "%", "runs", ...
    target: float | None = None
    comparison: str = ""
    detail: str = ""  # the raw work it was measured against, the sample count, the spread

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.comparison:
            return None
        return {"<=": self.value <= self.target, "<": self.value < self.target,
                "==": self.value == self.target}[self.comparison]

    def target_text(self) -> str:
        return f"{self.comparison} {self.target:g} {self.unit}".strip() if self.target is not None else ""


def machine() -> str:
    """The machine the figures were measured on, for the table's heading."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    try:
        mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                           if line.startswith("MemTotal")))
        memory = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "? GiB"
    import os

    return f"{os.cpu_count()} cores ({cpu}), {memory}, {platform.system()} {platform.release()}, Python " \
           f"{platform.python_version()}"


def table(figures: Sequence[Figure]) -> str:
    """A markdown table: figure, value, target, met, detail."""
    rows = ["| | figure | value | target | met | measured against |", "|---|---|---|---|---|---|"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        rows.append(f"| {f.id} | {f.label} | {f.value:.3g} {f.unit} | {f.target_text()} | {met} | {f.detail} |")
    return "\n".join(rows)


def save(figures: Sequence[Figure], path: Path) -> None:
    path.write_text(json.dumps({"machine": machine(), "figures": [asdict(f) for f in figures]}, indent=2) + "\n")


def load(path: Path) -> list[Figure]:
    return [Figure(**f) for f in json.loads(path.read_text())["figures"]]
