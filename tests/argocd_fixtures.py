"""Fixtures for Argo CD tests: a real deploy repo, the controller double, a real client.

Import the fixtures into a test module (``from argocd_fixtures import ...``) or list this module
in the root conftest's ``pytest_plugins``. Nothing here is autouse.

* ``deploy_repo``: a bare Git repository (``tmp_path``) with ``k3d/helm/values.yaml`` holding the
  three image blocks; ``commit_tags(...)`` commits new tags and returns the SHA.
* ``make_argocd_double(**options)``: starts an ``ArgoCDControllerDouble`` with the Application
  pointing at ``deploy_repo``; stopped (and checked for controller errors) at teardown.
* ``argocd_double``: the same with default options.
* ``make_argocd_client(double, app_name=...)`` / ``argocd_client``: ``ArgoCDClient`` built by
  ``from_kubeconfig`` from the double's kubeconfig, i.e. the official client over HTTP.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argocd_double import ArgoCDControllerDouble

from coelho_pipeline.resources.argocd import ArgoCDClient

APP_NAME = "coelho-realtime"
APP_NAMESPACE = "argocd"
DEPLOY_NAMESPACE = "coelho-realtime"
REGISTRY = "127.0.0.1:5000/coelho"
VALUES_PATH = "k3d/helm/values.yaml"
# values key -> (image repository, Deployment)
APPS: Mapping[str, tuple[str, str]] = {
    "fastapi": (f"{REGISTRY}/fastapi", "coelho-realtime-fastapi"),
    "kafkaProducers": (f"{REGISTRY}/kafka-producers", "coelho-realtime-kafka-producers"),
    "sveltekit": (f"{REGISTRY}/sveltekit", "coelho-realtime-sveltekit"),
}

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git with an argument list (never a shell); return stdout."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **_GIT_ENV}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def values_yaml(tags: Mapping[str, str]) -> str:
    lines = ["# COELHO RealTime values (test copy)", "environment: development", ""]
    for key, (repository, _) in APPS.items():
        lines += [f"{key}:", "  image:", f"    repository: {repository}", f'    tag: "{tags[key]}"', "  replicas: 1", ""]
    return "\n".join(lines)


@dataclass
class DeployRepo:
    """A bare repo (the 'remote' Argo CD reads) plus a work tree that commits to it."""

    bare: Path
    work: Path
    branch: str = "master"
    shas: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.bare)

    def commit_tags(self, tag: str | Mapping[str, str], message: str | None = None) -> str:
        """Set every app's tag (or the given ones), commit, push; return the new SHA."""
        tags = {key: tag for key in APPS} if isinstance(tag, str) else {**self.tags, **tag}
        target = self.work / VALUES_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(values_yaml(tags))
        git("add", VALUES_PATH, cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message or f"deploy {tags}", cwd=self.work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work).strip()
        self.shas.append(sha)
        self.tags = tags
        return sha

    def images(self, tag: str | Mapping[str, str]) -> dict[str, str]:
        """Deployment name -> expected image for these tags."""
        tags = {key: tag for key in APPS} if isinstance(tag, str) else tag
        return {deployment: f"{repository}:{tags[key]}" for key, (repository, deployment) in APPS.items()}


def application_manifest(repo_url: str, *, name: str = APP_NAME, **spec_overrides: Any) -> dict[str, Any]:
    """The coelho-realtime Application (k3d/argocd/application.yaml) pointed at ``repo_url``."""
    manifest: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": APP_NAMESPACE,
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": repo_url,
                "targetRevision": "master",
                "path": "k3d/helm",
                "helm": {"valueFiles": ["values.yaml"], "parameters": [{"name": "environment", "value": "production"}]},
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": DEPLOY_NAMESPACE},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["CreateNamespace=true"]},
        },
    }
    manifest["spec"].update(copy.deepcopy(spec_overrides))
    return manifest


@pytest.fixture
def deploy_repo(tmp_path: Path) -> DeployRepo:
    bare = tmp_path / "remote" / "deploy.git"
    work = tmp_path / "work"
    git("init", "--quiet", "--bare", "-b", "master", str(bare))
    git("clone", "--quiet", str(bare), str(work))
    repo = DeployRepo(bare=bare, work=work)
    repo.commit_tags("v0", "initial values")
    return repo


@pytest.fixture
def make_argocd_double(deploy_repo: DeployRepo) -> Iterator[Callable[..., ArgoCDControllerDouble]]:
    started: list[ArgoCDControllerDouble] = []

    def make(*, manifest: Mapping[str, Any] | None = None, **options: Any) -> ArgoCDControllerDouble:
        double = ArgoCDControllerDouble(**options).start()
        started.append(double)
        double.create_application(manifest or application_manifest(deploy_repo.url))
        # The controller's first comparison (Argo CD does one when an app appears).
        double.wait_for(lambda: bool(double.events_of("refresh")), timeout=10)
        return double

    yield make
    for double in started:
        double.stop()
    errors = [e for double in started for e in double.errors]
    assert not errors, f"the Argo CD double's controller loop failed: {errors!r}"


@pytest.fixture
def argocd_double(make_argocd_double: Callable[..., ArgoCDControllerDouble]) -> ArgoCDControllerDouble:
    return make_argocd_double()


@pytest.fixture
def make_argocd_client(tmp_path: Path) -> Iterator[Callable[..., ArgoCDClient]]:
    clients: list[ArgoCDClient] = []

    def make(double: ArgoCDControllerDouble, *, app_name: str = APP_NAME, **kwargs: Any) -> ArgoCDClient:
        kubeconfig = double.write_kubeconfig(tmp_path / f"kubeconfig-{len(clients)}")
        client = ArgoCDClient.from_kubeconfig(
            kubeconfig=str(kubeconfig), context="kmock", app_name=app_name, namespace=APP_NAMESPACE
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def argocd_client(argocd_double: ArgoCDControllerDouble, make_argocd_client: Callable[..., ArgoCDClient]) -> ArgoCDClient:
    return make_argocd_client(argocd_double)
