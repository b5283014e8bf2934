"""Time set_tags against a plain ruamel.yaml load of the same values file.

    .venv/bin/python benchmarks/bench_values.py [corpus-file-name-or-path]

Defaults to argo-cd's values (~179 KB) from the values corpus, found through
$COELHO_VALUES_CORPUS or ../shared/testdata/values-corpus; the writes are the
file's cases from the corpus' cases.yaml. The operations run round-robin and
each row shows the best wall time (the run least disturbed by other load) and
its ratio to the round-trip load.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML

from coelho_pipeline.values import TagWrite, set_tags

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(
    os.environ.get("COELHO_VALUES_CORPUS") or REPO.parent / "shared" / "testdata" / "values-corpus"
)
DEFAULT = "argoproj__argo-helm__argo-cd.values.yaml"
ROUNDS = 15


def _load_and_dump(text: str) -> str:
    """What a re-dumping updater does (for scale only: it does not keep the bytes)."""
    yaml = YAML(typ="rt")
    out = io.StringIO()
    yaml.dump(yaml.load(text), out)
    return out.getvalue()


def _case_writes(name: str) -> list[TagWrite]:
    cases = YAML(typ="safe").load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
    for entry in cases["files"]:
        if entry["file"] == name:
            return [TagWrite(c["path"], "v9.9.9", c["kind"]) for c in entry["cases"]]
    raise SystemExit(f"{name}: no cases in {CORPUS / 'cases.yaml'}")


def main(name: str) -> None:
    path = Path(name) if os.sep in name else CORPUS / name
    text = path.read_bytes().decode("utf-8")
    writes = _case_writes(path.name)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("ruamel rt load (YAML(typ='rt').load)", lambda: YAML(typ="rt").load(text)),
        ("ruamel rt compose (node tree only)", lambda: YAML(typ="rt").compose(text)),
        ("set_tags, 1 write", lambda: set_tags(text, writes[:1])),
        (f"set_tags, {len(writes)} writes", lambda: set_tags(text, writes)),
        ("ruamel rt load + dump (re-dump approach)", lambda: _load_and_dump(text)),
    ]
    best = [float("inf")] * len(rows)
    for _ in range(ROUNDS):
        for i, (_, fn) in enumerate(rows):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    size = len(text.encode("utf-8"))
    print(f"{path.name}: {size} bytes, {text.count(chr(10))} lines, best of {ROUNDS}")
    for (label, _), seconds in zip(rows, best):
        print(f"  {label:<42} {seconds * 1000:8.1f} ms  {seconds / best[0]:5.2f}x")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
