"""Draws the benchmark figures as a PNG: one panel per group (figure id and unit), each figure a bar
with its target marked on it.

    .venv/bin/python benchmarks/plot.py [benchmarks/results/latest.json] [-o out.png]

Bars are green when the target is met, red when it is not, grey when the figure is information only;
a figure that could not be measured (NaN) shows its reason instead of a bar. The target is the black
tick across the bar, with its comparison written at the right. Re-plots any json that
``figures.save`` wrote (run_all.py writes benchmarks/results/latest.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from figures import Figure, load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = {True: "#3a9d5d", False: "#d0453a", None: "#9aa0a6"}


def groups(figures: Sequence[Figure]) -> list[tuple[str, list[Figure]]]:
    """(title, figures) per figure id and unit, in the order they first appear: one axis, one unit."""
    out: dict[tuple[str, str], list[Figure]] = {}
    for f in figures:
        out.setdefault((f.id, f.unit), []).append(f)
    return [(f"{fid} ({unit})" if unit else fid, fs) for (fid, unit), fs in out.items()]


def _number(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}".strip()


def _measured(f: Figure) -> bool:
    return isinstance(f.value, (int, float)) and math.isfinite(f.value)


def plot(figures: Sequence[Figure], path: Path, *, title: str = "coelho-pipeline benchmarks",
         subtitle: str = "") -> Path:
    panels = groups(figures)
    if not panels:
        raise ValueError("no figures to plot")
    rows = [len(fs) for _, fs in panels]
    height = sum(0.55 * n + 0.9 for n in rows) + 1.0
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, height), squeeze=False,
                             gridspec_kw={"height_ratios": [n + 1.2 for n in rows]})
    for ax, (name, fs) in zip(axes[:, 0], panels):
        _panel(ax, name, fs)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11, y=0.995)
    top = 1 - 0.62 / height  # below the title
    fig.text(0.5, top, "bar: measured value  |  black tick: target  |  green: target met, red: not met, "
             "grey: information only (no target)  |  x: times the raw work", ha="center", va="top",
             fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0, 1, top - 0.1 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(ax, name: str, fs: Sequence[Figure]) -> None:
    unit = fs[0].unit
    ys = list(range(len(fs)))[::-1]  # first figure on top
    scale_points = [abs(f.value) for f in fs if _measured(f)] + [abs(f.target) for f in fs if f.target is not None]
    if unit == "x":
        scale_points.append(1.0)  # the dotted "as fast as the raw work" line stays in view
    top = max(scale_points, default=1.0) or 1.0
    low = min([0.0] + [f.value for f in fs if _measured(f)] + [f.target for f in fs if f.target is not None])
    right = top * 1.45  # room for the value and target text at the bar's end
    for y, f in zip(ys, fs):
        if not _measured(f):
            ax.text(low, y, "  not measured: " + textwrap.shorten(f.detail or "no value", 110), va="center",
                    ha="left", fontsize=8, color="#d0453a", style="italic")
            continue
        ax.barh(y, f.value, height=0.6, color=COLORS[f.met], edgecolor="none")
        end = max(f.value, f.target if f.target is not None else f.value, 0.0)
        text = _number(f.value, unit)
        if f.target is not None:
            ax.plot([f.target, f.target], [y - 0.42, y + 0.42], color="black", linewidth=2.2, solid_capstyle="butt")
            text += f"   (target {f.target_text()}: {'met' if f.met else 'NOT met'})"
        ax.text(end + top * 0.02, y, text, va="center", ha="left", fontsize=8.5)
    ax.set_yticks(ys)
    ax.set_yticklabels(["\n".join(textwrap.wrap(f.label, 48)) for f in fs], fontsize=8.5)
    ax.set_xlim(min(low * 1.1, 0.0), right)
    ax.set_ylim(-0.7, len(fs) - 0.3)
    ax.set_xlabel(unit or "value", fontsize=8.5)
    ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
    ax.axvline(0, color="#444444", linewidth=0.8)
    if unit == "x":  # ratios to the raw work: 1 is "as fast as doing it by hand"
        ax.axvline(1, color="#444444", linewidth=0.9, linestyle=":")
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS / "latest.json",
                        help="figures saved by figures.save (default benchmarks/results/latest.json)")
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default: the json's path with .png)")
    args = parser.parse_args(argv)
    figures = load(args.json)
    machine = json.loads(args.json.read_text()).get("machine", "")
    out = plot(figures, args.output or args.json.with_suffix(".png"), subtitle=machine)
    print(out)


if __name__ == "__main__":
    main()
