"""The cluster's Dagster instance (k3d/dagster/dagster.yaml) as the tests run it on this host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_INSTANCE = REPO_ROOT / "k3d" / "dagster" / "dagster.yaml"
# The paths of the pipeline's image that the instance names (DAGSTER_HOME, the state volume, the
# docker client certificates).
CONTAINER_PATHS = ("/opt/dagster", "/certs")


def on_host(value: Any, root: Path) -> Any:
    """``value`` with every container path (a string under CONTAINER_PATHS) moved under ``root``."""
    if isinstance(value, dict):
        return {k: on_host(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [on_host(v, root) for v in value]
    if isinstance(value, str) and any(value == p or value.startswith(p + "/") for p in CONTAINER_PATHS):
        return f"{root}{value}"
    return value


def cluster_instance(root: Path, *, run_launcher: bool) -> dict[str, Any]:
    """k3d/dagster/dagster.yaml with its paths under ``root``. Without ``run_launcher`` runs are
    launched as under ``dagster dev`` (the default launcher). With it, one change, because the
    cluster is a kmock API on this host: the launcher finds the API through KUBECONFIG instead of
    the in-cluster ServiceAccount. (The run pods' registry-proxy sidecar stays in their spec; the
    kubelet double does not run it, and the registry is on this host's loopback already.)"""
    config = on_host(yaml.safe_load(CLUSTER_INSTANCE.read_text()), root)
    if not run_launcher:
        del config["run_launcher"]
        return config
    config["run_launcher"]["config"]["load_incluster_config"] = False
    return config


def write_instance(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
