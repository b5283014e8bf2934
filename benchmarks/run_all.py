"""Every speed benchmark in one run: the figures table, benchmarks/results/latest.json and latest.png.

    scripts/bench [--quick] [--only P4,P7] [--skip P6] [any bench_daemon.py option]
    .venv/bin/python benchmarks/run_all.py ...          (the same, without the installs)

Parts: P4 (bench_builds.py: builds per commit kind, concurrent builds), P7 (bench_drift.py: one drift
check against 100 Deployments served by kmock) and bench_daemon.py's parts (P1, P1-real, P1-postgres, P2,
P2-webhook, P3, P5, P6, growth: pushes delivered by the real Dagster daemon). --only and --skip take
those names, comma-separated or repeated. --quick and every option this script does not know go to
bench_daemon.py (see its --help). A part that is missing or fails is recorded as a figure saying so
(value NaN, "FAILED: ..."), and the other parts still run; the exit status is then 1.

What the parts need is started here when it is missing: a Docker engine (when none answers at
DOCKER_HOST or the default socket, a private dockerd on its own socket under /tmp, stopped by its
PID at the end) and the local base images (scripts/base-images.sh, idempotent). Each part starts and
stops its own registry, git daemon, kmock and Dagster processes. Progress and Dagster's run logs go
to stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
for _p in (HERE, REPO_ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from figures import Figure, machine, save, table  # noqa: E402

from coelho_pipeline.dev import services  # noqa: E402

RESULTS = HERE / "results"
NAN = float("nan")
# Parts run here, by their figure id: (module, needs Docker).
OWN_PARTS = {"P4": ("bench_builds", True), "P7": ("bench_drift", False)}
# bench_daemon.py's parts when it cannot be imported to ask (its PARTS).
DAEMON_PARTS_FALLBACK = ("P1", "P1-real", "P1-postgres", "P2", "P2-webhook", "P3", "P5", "P6", "growth")


def log(message: str) -> None:
    print(f"[run_all] {message}", file=sys.stderr, flush=True)


def _split(values: Sequence[str] | None) -> list[str]:
    return [p.strip() for v in values or () for p in str(v).split(",") if p.strip()]


def failed(part: str, what: str, error: BaseException | str) -> Figure:
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {text}"
    return Figure(part, f"{what} did not run", NAN, "", None, "", f"FAILED: {text}")


# -- what the parts need ------------------------------------------------------------------------------

def base_images(host: str) -> None:
    t0 = time.monotonic()
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "base-images.sh")],
                            env={**os.environ, "DOCKER_HOST": host}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/base-images.sh failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-500:]}")
    log(f"base images ready ({time.monotonic() - t0:.0f} s){': ' + result.stdout.strip() if result.stdout.strip() else ''}")


# -- the parts ----------------------------------------------------------------------------------------

def _run_part(name: str, what: str, fn: Callable[[], list[Figure]]) -> tuple[list[Figure], bool]:
    t0 = time.monotonic()
    log(f"{name}: {what} ...")
    try:
        figures = list(fn())
    except BaseException as e:  # noqa: BLE001 - recorded, and the other parts still run
        if isinstance(e, KeyboardInterrupt):
            raise
        log(f"{name}: FAILED after {time.monotonic() - t0:.0f} s:\n{traceback.format_exc()}")
        return [failed(name, what, e)], False
    bad = [f for f in figures if isinstance(f.detail, str) and f.detail.startswith("FAILED")]
    log(f"{name}: {len(figures)} figures in {time.monotonic() - t0:.0f} s"
        + (f", {len(bad)} of them FAILED" if bad else ""))
    return figures, not bad


def _daemon_module():
    """bench_daemon, or the exception that stopped it importing."""
    try:
        return importlib.import_module("bench_daemon"), None
    except BaseException as e:  # noqa: BLE001 - a broken or missing part is recorded, not fatal
        if isinstance(e, KeyboardInterrupt):
            raise
        return None, e


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Every other option is passed on to benchmarks/bench_daemon.py.")
    p.add_argument("--quick", action="store_true", help="fewer rounds everywhere (for development)")
    p.add_argument("--only", action="append", default=[], metavar="PARTS",
                   help="run only these parts, e.g. P4,P7 (P4, P7 and bench_daemon.py's parts)")
    p.add_argument("--skip", action="append", default=[], metavar="PARTS", help="leave these parts out")
    p.add_argument("--results", type=Path, default=RESULTS, help="where latest.json/.png go (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    options, rest = parser().parse_known_args(argv)
    only, skip = set(_split(options.only)), set(_split(options.skip))
    daemon, daemon_error = _daemon_module()
    daemon_parts = tuple(getattr(daemon, "PARTS", DAEMON_PARTS_FALLBACK))
    known = {p.lower(): p for p in (*OWN_PARTS, *daemon_parts)}
    unknown = sorted(p for p in only | skip if p.lower() not in known)
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(known.values())}")
    only = {known[p.lower()] for p in only}
    skip = {known[p.lower()] for p in skip}
    wanted = [p for p in known.values() if (not only or p in only) and p not in skip]
    own = [p for p in OWN_PARTS if p in wanted]
    for_daemon = [p for p in daemon_parts if p in wanted]
    log(f"parts: {', '.join(wanted) or 'none'}{' (quick)' if options.quick else ''}"
        + (f"; passed on to bench_daemon: {' '.join(rest)}" if rest else ""))
    daemon_ns = None
    if for_daemon and daemon is not None:
        # Parsed before anything starts: a mistyped option stops here, not after the Docker engine is up.
        make = getattr(daemon, "parser", None)
        daemon_ns = make().parse_args(rest) if callable(make) else argparse.Namespace(rest=list(rest))
        daemon_ns.quick = options.quick or bool(getattr(daemon_ns, "quick", False))
        # Its own parts by name (everything bench_daemon knows when nothing was narrowed down).
        daemon_ns.only = for_daemon if (only or skip) else []
        daemon_ns.skip = []
    elif rest:
        log(f"options for bench_daemon ignored (it does not run): {' '.join(rest)}")

    figures: list[Figure] = []
    ok = True
    started = time.monotonic()
    needs_docker = bool(for_daemon) or any(OWN_PARTS[p][1] for p in own)
    with contextlib.ExitStack() as stack:
        docker_error: BaseException | None = None
        if needs_docker:
            try:
                host = stack.enter_context(services.docker_engine(log))
                base_images(host)
            except Exception as e:  # noqa: BLE001 - the parts that need it are recorded as failed
                docker_error = e
                log(f"Docker engine / base images: FAILED: {e}")
        for part in own:
            module_name, docker_needed = OWN_PARTS[part]
            if docker_needed and docker_error is not None:
                figures.append(failed(part, module_name, docker_error))
                ok = False
                continue

            def run_own(module_name: str = module_name) -> list[Figure]:
                return importlib.import_module(module_name).run(argparse.Namespace(quick=options.quick))

            got, fine = _run_part(part, module_name, run_own)
            figures += got
            ok &= fine
        if for_daemon:
            label = ",".join(for_daemon)
            if daemon is None:
                log(f"bench_daemon: cannot be imported: {type(daemon_error).__name__}: {daemon_error}")
                figures.append(failed(label, "bench_daemon", daemon_error))
                ok = False
            elif docker_error is not None:
                figures.append(failed(label, "bench_daemon", docker_error))
                ok = False
            else:
                got, fine = _run_part(label, "bench_daemon", lambda: daemon.run(daemon_ns))
                figures += got
                ok &= fine

    # In figure order (P1, P2, ... then growth and the rest), each part's own order kept.
    figures.sort(key=lambda f: (int(m[1]) if (m := re.match(r"P(\d+)", f.id)) else 99))
    heading = machine()
    print(f"## Benchmarks on {heading}\n")
    print(table(figures))
    print(f"\n{len(figures)} figures in {time.monotonic() - started:.0f} s"
          + ("" if ok else "; some parts FAILED (see the rows marked FAILED and stderr)"))
    results = options.results
    results.mkdir(parents=True, exist_ok=True)
    save(figures, results / "latest.json")
    try:
        from plot import plot

        png = plot(figures, results / "latest.png", subtitle=heading)
        print(f"results: {results / 'latest.json'}, {png}")
    except Exception as e:  # noqa: BLE001 - the table and the json are already out
        log(f"plot: FAILED: {type(e).__name__}: {e}")
        print(f"results: {results / 'latest.json'} (no PNG: {type(e).__name__}: {e})")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
