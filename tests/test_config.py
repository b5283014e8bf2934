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


# Case 8: credentials in COELHO_GIT_URL are refused, and the message never repeats them.
@pytest.mark.parametrize("url", [
    "https://gitlab.example/coelho.git?private_token=glpat-hunter2",
    "https://git.example/coelho.git?access_token=hunter2",
    "https://git.example/coelho.git?ref=x&token=hunter2",
    "http://127.0.0.1:8080/coelho.git?Token=hunter2",
    "ssh://bot:hunter2@git.example/coelho.git",
    "ssh://bot:hunter2@git.example:2222/coelho.git",
    "git://bot:hunter2@git.example/coelho.git",
])
def test_credentials_in_the_git_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"COELHO_GIT_URL": url})
    assert "COELHO_GIT_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", [
    "ssh://git@git.example/coelho.git",
    "ssh://git@git.example:2222/coelho.git",
    "git@git.example:team/coelho.git",
    "https://git.example/coelho.git?ref=main",
])
def test_ssh_user_and_harmless_queries_are_fine(url: str) -> None:
    assert Settings.from_env({"COELHO_GIT_URL": url}).git_url == url


def test_a_malformed_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"COELHO_GIT_URL": "https://bot:hunter2@git.example:notaport/x.git"})
    assert "COELHO_GIT_URL" in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["http://git.example/coelho.git", "http://10.0.0.5:3000/coelho.git"])
def test_a_token_over_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"COELHO_GIT_URL": url, "COELHO_GIT_TOKEN": "hunter2"})
    message = str(info.value)
    assert "COELHO_GIT_TOKEN" in message and "COELHO_GIT_URL" in message and "hunter2" not in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/coelho.git", "http://localhost/coelho.git",
                                 "http://[::1]:8080/coelho.git", "https://git.example/coelho.git"])
def test_a_token_over_loopback_http_or_https_is_accepted(url: str) -> None:
    assert Settings.from_env({"COELHO_GIT_URL": url, "COELHO_GIT_TOKEN": "hunter2"}).git_token == "hunter2"


# Case 9: the sync wait must fit inside the run's maximum runtime, or run monitoring kills it mid-wait.
def _home(tmp_path, text: str) -> str:
    (tmp_path / "dagster.yaml").write_text(text)
    return str(tmp_path)


def test_a_sync_timeout_longer_than_run_monitoring_allows_is_refused(tmp_path) -> None:
    home = _home(tmp_path, "run_monitoring: {enabled: true, max_runtime_seconds: 1200}\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "DAGSTER_HOME": home, "COELHO_SYNC_TIMEOUT": "1500"})
    message = str(info.value)
    assert "COELHO_SYNC_TIMEOUT + COELHO_ROLLOUT_TIMEOUT + COELHO_VERIFY_SOAK_SECONDS = 1860s" in message
    assert "max_runtime_seconds=1200" in message and str(tmp_path / "dagster.yaml") in message


def test_the_rollout_wait_and_soak_count_against_run_monitoring_too(tmp_path) -> None:
    home = _home(tmp_path, "run_monitoring: {enabled: true, max_runtime_seconds: 1200}\n")
    with pytest.raises(ConfigError, match="max_runtime_seconds=1200"):
        Settings.from_env({**BASE, "DAGSTER_HOME": home, "COELHO_SYNC_TIMEOUT": "600",
                           "COELHO_VERIFY_SOAK_SECONDS": "400"})


def test_the_default_sync_timeout_fits_the_repositorys_dagster_yaml() -> None:
    from pathlib import Path
    home = str(Path(__file__).resolve().parents[1])
    assert Settings.from_env({**BASE, "DAGSTER_HOME": home}).sync_timeout == 600


@pytest.mark.parametrize("text", [
    "run_monitoring: {enabled: false, max_runtime_seconds: 60}\n",
    "run_monitoring: {enabled: true}\n",
    "telemetry: {enabled: false}\n",
    "",
])
def test_no_runtime_limit_means_no_constraint(tmp_path, text: str) -> None:
    home = _home(tmp_path, text)
    assert Settings.from_env({**BASE, "DAGSTER_HOME": home, "COELHO_SYNC_TIMEOUT": "3000"}).sync_timeout == 3000


def test_no_dagster_yaml_means_no_constraint(tmp_path) -> None:
    assert Settings.from_env({**BASE, "DAGSTER_HOME": str(tmp_path), "COELHO_SYNC_TIMEOUT": "5000"}).sync_timeout == 5000


def test_a_broken_dagster_yaml_names_the_file_not_its_content(tmp_path) -> None:
    home = _home(tmp_path, "storage: {postgres: {password: hunter2\nrun_monitoring: [\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "DAGSTER_HOME": home})
    assert "dagster.yaml" in str(info.value) and "hunter2" not in str(info.value)


# Verification after deploy and auto-rollback: each bad value names its variable (and entry).
def test_verification_settings_are_read() -> None:
    s = Settings.from_env({**BASE, "COELHO_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
                           "COELHO_VERIFY_QUERIES": "- {name: errors, query: 'sum(rate(x[1m]))', max: 0.05}\n"
                                                    "- {name: up, query: 'min(up)', min: 1}\n",
                           "COELHO_VERIFY_SOAK_SECONDS": "0", "COELHO_VERIFY_INTERVAL_SECONDS": "2",
                           "COELHO_ROLLOUT_TIMEOUT": "120", "COELHO_AUTO_ROLLBACK": "true"})
    assert [(c.name, c.min, c.max) for c in s.verify_checks] == [("errors", None, 0.05), ("up", 1.0, None)]
    assert (s.verify_soak, s.verify_interval, s.rollout_timeout, s.auto_rollback) == (0, 2, 120, True)
    assert Settings.from_env(BASE).auto_rollback is False


@pytest.mark.parametrize(("extra", "named"), [
    ({"COELHO_AUTO_ROLLBACK": "sometimes"}, "COELHO_AUTO_ROLLBACK"),
    ({"COELHO_VERIFY_SOAK_SECONDS": "-5"}, "COELHO_VERIFY_SOAK_SECONDS"),
    ({"COELHO_VERIFY_INTERVAL_SECONDS": "0"}, "COELHO_VERIFY_INTERVAL_SECONDS"),
    ({"COELHO_ROLLOUT_TIMEOUT": "a while"}, "COELHO_ROLLOUT_TIMEOUT"),
    ({"COELHO_PROMETHEUS_URL": "prometheus:9090"}, "COELHO_PROMETHEUS_URL"),
    ({"COELHO_PROMETHEUS_URL": "https://admin:hunter2@prom.example"}, "COELHO_PROMETHEUS_URL"),
    ({"COELHO_VERIFY_QUERIES": "- {name: x, query: up, max: 1}"}, "COELHO_PROMETHEUS_URL"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090", "COELHO_VERIFY_QUERIES": "[{name: x, query: up"},
     "COELHO_VERIFY_QUERIES is not valid YAML at line 1"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090", "COELHO_VERIFY_QUERIES": "{name: x}"}, "must be a list"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090", "COELHO_VERIFY_QUERIES": "- {name: x, query: up}"},
     "COELHO_VERIFY_QUERIES[0] (x) needs min and/or max"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090",
      "COELHO_VERIFY_QUERIES": "- {name: x, query: up, max: 1}\n- {name: y, query: up, max: high}"},
     "COELHO_VERIFY_QUERIES[1].max must be a finite number"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090", "COELHO_VERIFY_QUERIES": "- {name: x, query: up, max: 1, maxx: 2}"},
     "COELHO_VERIFY_QUERIES[0] has unknown key(s) maxx"),
    ({"COELHO_PROMETHEUS_URL": "http://p:9090", "COELHO_VERIFY_QUERIES": "- {name: x, query: up, min: 2, max: 1}"},
     "min 2 is above max 1"),
])
def test_bad_verification_settings_name_the_variable(extra: dict, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, **extra})
    assert named in str(info.value)
    assert "hunter2" not in str(info.value)
