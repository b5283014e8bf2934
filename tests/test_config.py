"""Settings from the environment: defaults, and errors that name the variable at fault."""

from __future__ import annotations

import pytest

from coelho_pipeline.config import ConfigError, Settings

BASE = {"COELHO_GIT_URL": "git://127.0.0.1:9418/coelho.git"}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert (s.git_branch, s.registry, s.values_path, s.chart_path) == (
        "master", "127.0.0.1:5000/coelho", "k3d/helm/values.yaml", "k3d/helm")
    assert (s.argocd_app, s.argocd_namespace, s.cluster_configured) == ("coelho-realtime", "argocd", False)


def test_everything_set(tmp_path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    s = Settings.from_env({
        **BASE, "COELHO_GIT_BRANCH": "main", "COELHO_GIT_TOKEN": "t0ken", "COELHO_REGISTRY": "registry.local:5000/team",
        "COELHO_REGISTRY_USERNAME": "bot", "COELHO_REGISTRY_PASSWORD": "s3cret", "COELHO_VALUES_PATH": "deploy/values.yaml",
        "COELHO_ARGOCD_APP": "app", "COELHO_ARGOCD_NAMESPACE": "gitops", "KUBECONFIG": str(kubeconfig),
        "COELHO_KUBE_CONTEXT": "k3d-coelho", "COELHO_SYNC_TIMEOUT": "90", "COELHO_APPS": "fastapi, sveltekit",
        "COELHO_BUILD_ARGS": "PYTHON_IMAGE=local/python:3.11 NODE_IMAGE=local/node:18",
    })
    assert s.chart_path == "deploy" and s.sync_timeout == 90 and s.apps == ("fastapi", "sveltekit")
    assert s.build_args == {"PYTHON_IMAGE": "local/python:3.11", "NODE_IMAGE": "local/node:18"}
    assert s.cluster_configured
    assert "t0ken" not in repr(s) and "s3cret" not in repr(s)


@pytest.mark.parametrize(("env", "variable"), [
    ({}, "COELHO_GIT_URL"),
    ({"COELHO_GIT_URL": "not a url"}, "COELHO_GIT_URL"),
    ({"COELHO_GIT_URL": "https://bot:hunter2@git.example/x.git"}, "COELHO_GIT_URL"),
    ({"COELHO_GIT_URL": "https://ghp_hunter2@git.example/x.git"}, "COELHO_GIT_URL"),
    ({**BASE, "COELHO_GIT_BRANCH": "bad..branch"}, "COELHO_GIT_BRANCH"),
    ({**BASE, "COELHO_REGISTRY": "Not/A Registry"}, "COELHO_REGISTRY"),
    ({**BASE, "COELHO_REGISTRY_USERNAME": "bot"}, "COELHO_REGISTRY_PASSWORD"),
    ({**BASE, "COELHO_REGISTRY_PASSWORD": "pw"}, "COELHO_REGISTRY_USERNAME"),
    ({**BASE, "COELHO_VALUES_PATH": "/etc/values.yaml"}, "COELHO_VALUES_PATH"),
    ({**BASE, "COELHO_VALUES_PATH": "../values.yaml"}, "COELHO_VALUES_PATH"),
    ({**BASE, "COELHO_SYNC_TIMEOUT": "soon"}, "COELHO_SYNC_TIMEOUT"),
    ({**BASE, "COELHO_SYNC_TIMEOUT": "-1"}, "COELHO_SYNC_TIMEOUT"),
    ({**BASE, "KUBECONFIG": "/nonexistent/kubeconfig"}, "KUBECONFIG"),
    ({**BASE, "COELHO_APPS": "fastapi,Bad App"}, "COELHO_APPS"),
    ({**BASE, "COELHO_BUILD_ARGS": "JUSTANAME"}, "COELHO_BUILD_ARGS"),
])
def test_bad_values_name_the_variable(env: dict, variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert variable in str(info.value)
    assert "hunter2" not in str(info.value) and "pw" not in str(info.value).replace("PASSWORD", "")
