"""Building images: only declared build arguments reach a build, several apps build side by side
(bounded by COELHO_BUILD_CONCURRENCY), and one failed build does not lose the others' images."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from coelho_pipeline.resources.images import ImageBuilder, args_for, declared_build_args
from pipeline_harness import Pipeline, materializations


def test_declared_build_args_reads_every_arg_instruction() -> None:
    dockerfile = """# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
arg VERSION
ARG A=1 \\
    # a comment inside the instruction
    B="two words"
RUN echo ARG NOT_AN_ARG=1
ENV ARG_LIKE=1
"""
    assert declared_build_args(dockerfile) == {"PYTHON_IMAGE", "VERSION", "A", "B"}


def _context(dockerfile: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_only_the_arguments_the_dockerfile_declares_are_passed() -> None:
    configured = {"PYTHON_IMAGE": "coelho-base/python:3.11-slim", "NODE_IMAGE": "coelho-base/node:18-slim",
                  "HTTPS_PROXY": "http://proxy.internal:3128"}
    passed = args_for(_context("ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\n"), configured)
    # The engine's predefined proxy arguments are accepted by every build without an ARG line.
    assert passed == {"PYTHON_IMAGE": "coelho-base/python:3.11-slim", "HTTPS_PROXY": "http://proxy.internal:3128"}


class BuildSpy:
    """Records when each real build_and_push ran, to see whether builds overlapped."""

    def __init__(self) -> None:
        self.intervals: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def most_at_once(self) -> int:
        edges = sorted([(s, 1) for s, _ in self.intervals.values()] + [(e, -1) for _, e in self.intervals.values()],
                       key=lambda x: (x[0], x[1]))
        now = best = 0
        for _, step in edges:
            now += step
            best = max(best, now)
        return best


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[BuildSpy]:
    spy = BuildSpy()
    real = ImageBuilder.build_and_push

    def recorded(self, **kwargs):
        start = time.monotonic()
        try:
            return real(self, **kwargs)
        finally:
            with spy._lock:
                spy.intervals[kwargs["repository"].rsplit("/", 1)[1]] = (start, time.monotonic())

    monkeypatch.setattr(ImageBuilder, "build_and_push", recorded)
    yield spy


def _log_text(pipeline: Pipeline, run_id: str) -> str:
    return "\n".join(e.user_message for e in pipeline.instance.all_logs(run_id))


@pytest.mark.docker
def test_three_changed_apps_build_side_by_side_without_undeclared_args(pipeline: Pipeline, spy: BuildSpy) -> None:
    assert len(pipeline.settings.build_args) > 1  # the fixture apps declare only PYTHON_IMAGE

    result = pipeline.deliver(pipeline.repo.head())

    assert result.success
    assert sorted(spy.intervals) == ["fastapi", "kafka-producers", "sveltekit"]
    assert spy.most_at_once() > 1, spy.intervals
    log = _log_text(pipeline, result.run_id)
    assert "Successfully built" in log
    assert "were not consumed" not in log  # the engine's warning for an undeclared build argument
    # No internal storage path (where the values are pickled) among any asset's metadata.
    storage = pipeline.instance.storage_directory()
    assert not [(k, name) for k, md in materializations(result).items() for name, value in md.items()
                if storage in str(value)]


@pytest.mark.docker
def test_build_concurrency_one_builds_one_at_a_time(pipeline: Pipeline, spy: BuildSpy) -> None:
    result = pipeline.with_settings(build_concurrency=1).deliver(pipeline.repo.head())

    assert result.success
    assert len(spy.intervals) == 3 and spy.most_at_once() == 1, spy.intervals


@pytest.mark.docker
def test_a_failed_build_keeps_the_images_built_beside_it(pipeline: Pipeline) -> None:
    seed = pipeline.repo.head()
    assert pipeline.deliver(seed).success
    broken = pipeline.repo.push({
        "apps/fastapi/main.py": "print('fine')\n",
        "apps/kafka_producers/main.py": "print('fine too')\n",
        "apps/sveltekit/Dockerfile": "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\nRUN exit 3\n",
    }, "Two good changes and a broken Dockerfile")

    result = pipeline.deliver(broken)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "images" and "apps/sveltekit" in failure.event_specific_data.error.message
    built = {k: md for k, md in materializations(result).items() if k.startswith("image/")}
    assert sorted(built) == ["image/fastapi", "image/kafka_producers"]
    assert all(md["rebuilt"] for md in built.values())
    assert pipeline.repo.head() == broken  # nothing was committed


@pytest.mark.docker
def test_an_engine_without_the_previous_image_pulls_it_as_the_cache_source(pipeline: Pipeline, docker_client) -> None:
    # An app whose slow part (a RUN) comes before its code: only the COPY layer should change.
    dockerfile = "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\nRUN echo built once > /layer\nCOPY . /srv\n"
    first = pipeline.repo.push({"apps/fastapi/Dockerfile": dockerfile}, "FastAPI: a RUN layer")
    assert pipeline.deliver(first).success
    previous = f"{pipeline.settings.registry}/fastapi:{first}"
    # As on a new engine (a build pod): neither the image nor its layers are on this engine any more.
    docker_client.images.remove(previous, force=True)
    docker_client.api.prune_builds()

    change = pipeline.repo.push({"apps/fastapi/main.py": "print('only the code changed')\n"}, "FastAPI: code")
    result = pipeline.deliver(change)

    assert result.success
    log = _log_text(pipeline, result.run_id)
    assert f"pulled {previous} as the cache source of this build" in log
    run_step = log.split("RUN echo built once > /layer", 1)[1]
    assert run_step.split("Step", 1)[0].count("Using cache") == 1, run_step[:400]
