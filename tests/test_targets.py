"""The targets file (COELHO_TARGETS): what a good file loads into, and an error for each way one can be wrong.

Every error must name the file, the exact line and the key path, and never repeat a secret: the
variables the file names are set to recognizable values and no message may contain them.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.catalog import App
from coelho_pipeline.config import ConfigError, Settings
from coelho_pipeline.targets import (
    Environment,
    Project,
    Target,
    TargetsError,
    load_targets,
    targets_from_settings,
    upstream_of,
)

SECRETS = ("glpat-SECRET-git-token", "SECRET-registry-password", "hunter2")
ENV = {
    "REALTIME_GIT_TOKEN": SECRETS[0],
    "REALTIME_REGISTRY_PASSWORD": SECRETS[1],
    "BATCH_GIT_TOKEN": SECRETS[0],
}

GOOD = """\
projects:
  - name: realtime
    git_url: https://gitlab.example.com/ml/coelho-realtime.git
    git_token_env: REALTIME_GIT_TOKEN
    registry: registry.example.com/coelho/
    registry_username: ci
    registry_password_env: REALTIME_REGISTRY_PASSWORD
    apps:
      - name: fastapi
        context: services/api/
        values_key: coelho.fastapi
      - kafka_producers
    environments:
      - name: prod                       # listed first, promoted from dev: must come out after dev
        values_path: k3d/helm/values-prod.yaml
        argocd_app: coelho-realtime-prod
        deploy_namespace: coelho-prod
        promote_from: dev
        promotion: auto
      - name: dev
        values_path: k3d/helm/values-dev.yaml
        chart_path: charts/realtime
        argocd_app: coelho-realtime-dev
        argocd_namespace: gitops
        deploy_namespace: coelho-dev
  - name: batch_jobs
    git_url: git@git.example.com:ml/batch.git
    git_branch: main
    environments:
      - name: dev
        argocd_app: batch-dev
"""


def _apps_root(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "repo"
    for name in names:
        (root / "apps" / name).mkdir(parents=True, exist_ok=True)
        (root / "apps" / name / "Dockerfile").write_text("FROM scratch\n")
    root.mkdir(exist_ok=True)
    return root


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[Target, ...]:
    return load_targets(_write(tmp_path, text), apps_root=_apps_root(tmp_path, "fastapi", "sveltekit"),
                        env=ENV if env is None else env)


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The message of the TargetsError loading ``text`` raises; it must name the file and leak no secret."""
    with pytest.raises(TargetsError) as info:
        _load(tmp_path, text, env)
    message = str(info.value)
    assert str(tmp_path / "targets.yaml") in message
    for secret in SECRETS:
        assert secret not in message
    return message


def _at(message: str, line: int, key: str) -> None:
    """``<file>:<line>: <key>`` then ": ", "=" or " " (config.py's validators write key=value or key must...)."""
    assert re.search(rf"targets\.yaml:{line}: {re.escape(key)}(: |=| )", message), message


# -- a good file ---------------------------------------------------------------------------------


def test_a_two_project_file_loads_in_upstream_first_order(tmp_path: Path) -> None:
    targets = _load(tmp_path, GOOD)
    assert [t.label for t in targets] == ["realtime/dev", "realtime/prod", "batch_jobs/dev"]
    assert not any(t.single for t in targets)
    dev, prod, batch = targets

    realtime = dev.project
    assert realtime is prod.project
    assert (realtime.name, realtime.git_branch, realtime.git_token_env) == ("realtime", "master", "REALTIME_GIT_TOKEN")
    assert realtime.registry == "registry.example.com/coelho"  # trailing slash dropped, as for COELHO_REGISTRY
    assert (realtime.registry_username, realtime.registry_password_env) == ("ci", "REALTIME_REGISTRY_PASSWORD")
    assert realtime.apps == (App("fastapi", build_context="services/api", values_key_path="coelho.fastapi"),
                             App("kafka_producers"))
    assert realtime.apps[0].context == "services/api" and realtime.apps[0].tag_path == "coelho.fastapi.image.tag"
    assert [e.name for e in realtime.environments] == ["prod", "dev"]  # the project keeps file order

    assert dev.environment == Environment(
        name="dev", argocd_app="coelho-realtime-dev", values_path="k3d/helm/values-dev.yaml",
        chart_path="charts/realtime", argocd_namespace="gitops", deploy_namespace="coelho-dev")
    assert prod.environment == Environment(
        name="prod", argocd_app="coelho-realtime-prod", values_path="k3d/helm/values-prod.yaml",
        chart_path="k3d/helm", argocd_namespace="argocd", deploy_namespace="coelho-prod",
        promote_from="dev", promotion="auto")

    # batch_jobs takes every default, and its apps come from apps_root.
    assert batch.project == Project(
        name="batch_jobs", git_url="git@git.example.com:ml/batch.git", apps=(App("fastapi"), App("sveltekit")),
        environments=(Environment(name="dev", argocd_app="batch-dev"),), git_branch="main")
    assert batch.environment.promotion == "manual" and batch.environment.deploy_namespace == "coelho-realtime"

    assert dev.key("source_commit") == dg.AssetKey(["realtime", "dev", "source_commit"])
    assert dev.name("deliver_commit") == "deliver_commit__realtime__dev"
    assert batch.name("git_push_sensor") == "git_push_sensor__batch_jobs__dev"
    # One writer per project: its environments share the branch they write.
    assert dev.writer_tag_value == prod.writer_tag_value == "realtime" and batch.writer_tag_value == "batch_jobs"
    assert dev.pool == prod.pool == "git_manifest__realtime" and batch.pool == "git_manifest__batch_jobs"

    assert upstream_of(prod, targets) == dev
    assert upstream_of(dev, targets) is None and upstream_of(batch, targets) is None


def test_a_single_target_keeps_the_names_from_before_targets(tmp_path: Path) -> None:
    (target,) = _load(tmp_path, """\
        projects:
          - name: realtime
            git_url: https://git.example/realtime.git
            environments:
              - name: dev
                argocd_app: realtime-dev
        """)
    assert target.single and target.label == "realtime/dev"
    assert target.key("source_commit") == dg.AssetKey(["source_commit"])
    assert target.name("deliver_commit") == "deliver_commit"
    assert (target.writer_tag_value, target.pool) == ("main", "git_manifest")


def test_upstream_of_refuses_to_guess_when_the_upstream_is_not_given(tmp_path: Path) -> None:
    targets = _load(tmp_path, GOOD)
    prod = next(t for t in targets if t.label == "realtime/prod")
    with pytest.raises(ValueError, match="realtime/prod promotes from 'dev'"):
        upstream_of(prod, [prod])


def test_the_same_argocd_app_in_another_namespace_is_another_target(tmp_path: Path) -> None:
    targets = _load(tmp_path, """\
        projects:
          - name: a
            git_url: https://git.example/a.git
            environments:
              - {name: dev, argocd_app: app, values_path: dev.yaml}
              - {name: prod, argocd_app: app, values_path: prod.yaml, argocd_namespace: argocd-prod}
        """)
    assert [t.environment.chart_path for t in targets] == [".", "."]  # the directory of values_path


def test_a_token_over_loopback_http_is_accepted(tmp_path: Path) -> None:
    (target,) = _load(tmp_path, """\
        projects:
          - name: realtime
            git_url: http://127.0.0.1:8080/realtime.git
            git_token_env: REALTIME_GIT_TOKEN
            environments: [{name: dev, argocd_app: realtime-dev}]
        """)
    assert target.project.git_token_env == "REALTIME_GIT_TOKEN"


# -- the COELHO_* variables as one target ---------------------------------------------------------

BASE = {"COELHO_GIT_URL": "git://127.0.0.1:9418/coelho.git"}


def test_targets_from_settings_is_one_default_target_with_plain_names() -> None:
    settings = Settings.from_env({**BASE, "COELHO_GIT_BRANCH": "main", "COELHO_VALUES_PATH": "deploy/values.yaml",
                                  "COELHO_ARGOCD_APP": "app", "COELHO_ARGOCD_NAMESPACE": "gitops"})
    (target,) = targets_from_settings(settings, [App("fastapi")])
    assert target.single and target.label == "default/default"
    assert target.project == Project(
        name="default", git_url="git://127.0.0.1:9418/coelho.git", apps=(App("fastapi"),),
        environments=(target.environment,), git_branch="main")
    # The release the single target has always rendered and compared, whatever the Application is called.
    assert target.environment == Environment(name="default", argocd_app="app", values_path="deploy/values.yaml",
                                             chart_path="deploy", argocd_namespace="gitops",
                                             release_name="coelho-realtime")
    assert target.key("source_commit") == dg.AssetKey(["source_commit"]) and target.pool == "git_manifest"


def test_targets_from_settings_names_the_secret_variables_only_when_they_are_set() -> None:
    settings = Settings.from_env({**BASE, "COELHO_GIT_TOKEN": "t0ken", "COELHO_REGISTRY_USERNAME": "bot",
                                  "COELHO_REGISTRY_PASSWORD": "s3cret"})
    (target,) = targets_from_settings(settings, [])
    assert (target.project.git_token_env, target.project.registry_password_env) == (
        "COELHO_GIT_TOKEN", "COELHO_REGISTRY_PASSWORD")
    assert "t0ken" not in repr(target) and "s3cret" not in repr(target)


def test_targets_from_settings_refuses_settings_that_name_a_targets_file(tmp_path: Path) -> None:
    settings = Settings.from_env({"COELHO_TARGETS": str(tmp_path / "targets.yaml")})
    with pytest.raises(ValueError, match="load_targets"):
        targets_from_settings(settings, [])


# -- Settings and COELHO_TARGETS ------------------------------------------------------------------


def test_coelho_targets_replaces_coelho_git_url_and_is_stored_resolved(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"COELHO_TARGETS": "conf/targets.yaml"})
    assert settings.git_url == ""
    assert settings.targets_file == str(tmp_path.resolve() / "conf" / "targets.yaml")
    assert Settings.from_env(BASE).targets_file is None


def test_coelho_targets_and_coelho_git_url_together_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "COELHO_TARGETS": "targets.yaml"})
    assert "COELHO_TARGETS" in str(info.value) and "COELHO_GIT_URL" in str(info.value)
    assert "one or the other" in str(info.value)


def test_a_blank_coelho_targets_is_unset() -> None:
    with pytest.raises(ConfigError, match="COELHO_GIT_URL is not set"):
        Settings.from_env({"COELHO_TARGETS": "  "})


# -- App overrides --------------------------------------------------------------------------------


def test_app_without_overrides_behaves_as_before() -> None:
    app = App("kafka_producers")
    assert (app.context, app.image, app.values_key, app.tag_path, app.repository_path, app.component,
            app.asset_name) == ("apps/kafka_producers", "kafka-producers", "kafkaProducers",
                                "kafkaProducers.image.tag", "kafkaProducers.image.repository", "kafka-producers",
                                "kafka_producers")
    assert App("fastapi") == App("fastapi", "", "")


def test_app_overrides_change_only_context_and_values_key() -> None:
    app = App("kafka_producers", build_context="services/producers", values_key_path="coelho.producers")
    assert (app.context, app.values_key, app.tag_path, app.image, app.asset_name) == (
        "services/producers", "coelho.producers", "coelho.producers.image.tag", "kafka-producers", "kafka_producers")


def test_the_conventional_values_written_out_give_the_plain_app(tmp_path: Path) -> None:
    (target,) = _load(tmp_path, """\
        projects:
          - name: realtime
            git_url: https://git.example/realtime.git
            apps: [{name: kafka_producers, context: ./apps/kafka_producers, values_key: kafkaProducers}]
            environments: [{name: dev, argocd_app: realtime-dev}]
        """)
    assert target.project.apps == (App("kafka_producers"),)


# -- the file itself ------------------------------------------------------------------------------


def test_a_missing_file_names_the_path_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(TargetsError) as info:
        load_targets(tmp_path / "nope.yaml", apps_root=tmp_path)
    assert "COELHO_TARGETS" in str(info.value) and str(tmp_path / "nope.yaml") in str(info.value)
    assert "does not exist" in str(info.value)


def test_a_directory_is_not_a_targets_file(tmp_path: Path) -> None:
    with pytest.raises(TargetsError, match="COELHO_TARGETS: .* is a directory"):
        load_targets(tmp_path, apps_root=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_names_the_path_and_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    path.chmod(0)
    with pytest.raises(TargetsError) as info:
        load_targets(path, apps_root=tmp_path)
    assert "COELHO_TARGETS" in str(info.value) and str(path) in str(info.value) and "cannot be read" in str(info.value)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_bytes(b"projects:\n  - name: r\xffaltime\n")
    with pytest.raises(TargetsError, match=r"targets.yaml:2: not UTF-8 text"):
        load_targets(path, apps_root=tmp_path)


@pytest.mark.parametrize(("text", "line"), [
    # A flow list left open: the parser stops at the ':' of the next line.
    ("projects:\n  - name: realtime\n    git_url: [https://x\n    token: hunter2\n", 4),
    # A tab cannot start a token.
    ("projects:\n  - name: realtime\n\tpassword: hunter2\n", 3),
    # The parser's own message for a duplicate key quotes its value: that must not reach ours.
    ("projects:\n  - name: realtime\n    git_url: https://git.example/x.git\n    git_url: hunter2\n", 4),
    ("projects: [}\n# hunter2\n", 1),
])
def test_invalid_yaml_names_the_line_but_not_the_content(tmp_path: Path, text: str, line: int) -> None:
    message = _error(tmp_path, text)
    assert f"targets.yaml:{line}: not valid YAML" in message


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- realtime\n", "mapping with a projects list expected, got a list"),
    ("realtime\n", "mapping with a projects list expected, got a string"),
])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, fragment: str) -> None:
    message = _error(tmp_path, text)
    _at(message, 1, "(top level)")
    assert fragment in message


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("{}\n", 1, "missing (required)"),
    ("# projects follow\nprojects: []\n", 2, "empty list"),
    ("projects:\n", 1, "list expected, got nothing (null)"),
    ("projects: realtime\n", 1, "list expected, got a string"),
    ("projects:\n  name: realtime\n", 1, "list expected, got a mapping"),
])
def test_projects_must_be_a_non_empty_list(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    message = _error(tmp_path, text)
    _at(message, line, "projects")
    assert fragment in message


# -- errors inside the file: (yaml, line, key path, what the message says) ------------------------

P3 = """\
projects:
  - name: realtime
    git_url: https://git.example/realtime.git
"""  # lines 1-3: the cases add their own environments from line 4
P4 = P3 + "    environments: [{name: dev, argocd_app: a}]\n"  # lines 1-4: the cases add project keys from line 5


def _url(url: str) -> str:
    return P4.replace("https://git.example/realtime.git", url)


def _case(text: str, line: int, key: str, fragment: str, env: dict[str, str] | None = None, *, name: str):
    return pytest.param(text, line, key, fragment, env, id=name)


ERRORS = [
    # Unknown keys, at every level, listing what is allowed.
    _case("projects: []\nversion: 2\n", 2, "version", "unknown key (allowed: projects)", name="unknown-top"),
    _case(P4 + "    branch: main\n", 5, "projects[0].branch",
          "unknown key (allowed: name, git_url, git_branch, git_token_env,", name="unknown-project"),
    _case(P4 + "    apps:\n      - {name: fastapi, dockerfile: Dockerfile}\n", 6, "projects[0].apps[0].dockerfile",
          "unknown key (allowed: name, context, values_key)", name="unknown-app"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        namespace: x\n", 7,
          "projects[0].environments[0].namespace", "unknown key (allowed: name, values_path, chart_path,",
          name="unknown-environment"),
    # A secret written into the file: refused, pointed to the *_env key, never repeated.
    _case(P4 + "    git_token: hunter2\n", 5, "projects[0].git_token", "give that variable's name in git_token_env",
          name="literal-git-token"),
    _case(P4 + "    registry_username: ci\n    registry_password: hunter2\n", 6, "projects[0].registry_password",
          "give that variable's name in registry_password_env", name="literal-registry-password"),
    # Wrong types.
    _case("projects:\n  - realtime\n", 2, "projects[0]", "mapping expected, got a string", name="project-not-mapping"),
    _case(P4.replace("name: realtime", "name: 7"), 2, "projects[0].name", "string expected, got a number",
          name="name-number"),
    _case(P4 + "    git_branch:\n", 5, "projects[0].git_branch",
          "string expected, got nothing (null) (omit the key for the default)", name="branch-null"),
    _case(P4 + "    git_branch: ''\n", 5, "projects[0].git_branch", "must not be empty", name="branch-empty"),
    _case(P4 + "    apps: fastapi\n", 5, "projects[0].apps", "list expected, got a string", name="apps-not-list"),
    _case(P4 + "    apps: []\n", 5, "projects[0].apps", "empty list: omit apps", name="apps-empty"),
    _case(P4 + "    apps: [fastapi, 3]\n", 5, "projects[0].apps[1]", "app name or mapping expected, got a number",
          name="app-number"),
    _case(P3 + "    environments:\n      name: dev\n", 4, "projects[0].environments", "list expected, got a mapping",
          name="environments-not-list"),
    _case(P3 + "    environments: []\n", 4, "projects[0].environments", "empty list", name="environments-empty"),
    _case(P3 + "    environments:\n      - dev\n", 5, "projects[0].environments[0]",
          "mapping expected, got a string", name="environment-not-mapping"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: [a]\n", 6,
          "projects[0].environments[0].argocd_app", "string expected, got a list", name="argocd-app-list"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        values_path: 2024-01-01\n", 7,
          "projects[0].environments[0].values_path", "string expected, got a value of another type", name="date"),
    # Missing required fields: the line of the mapping that lacks them.
    _case(P4.replace("  - name: realtime\n    git_url", "  - git_url"), 2, "projects[0].name", "missing (required)",
          name="missing-project-name"),
    _case(P4.replace("    git_url: https://git.example/realtime.git\n", ""), 2, "projects[0].git_url",
          "missing (required)", name="missing-git-url"),
    _case(P3, 2, "projects[0].environments", "missing (required)", name="missing-environments"),
    _case(P3 + "    environments:\n      - argocd_app: a\n", 5, "projects[0].environments[0].name",
          "missing (required)", name="missing-environment-name"),
    _case(P3 + "    environments:\n      - name: dev\n      - name: prod\n        values_path: p.yaml\n", 5,
          "projects[0].environments[0].argocd_app", "missing (required)", name="missing-argocd-app"),
    _case(P4 + "    apps:\n      - fastapi\n      - context: apps/x\n", 7, "projects[0].apps[1].name",
          "missing (required)", name="missing-app-name"),
    # Invalid names.
    _case(P4.replace("name: realtime", "name: Realtime"), 2, "projects[0].name", "'Realtime' is not a valid name",
          name="project-name-case"),
    _case(P4.replace("name: realtime", "name: real__time"), 2, "projects[0].name",
          "'real__time' is not a valid name", name="project-name-double-underscore"),
    _case(P3 + "    environments:\n      - name: dev-1\n        argocd_app: a\n", 5,
          "projects[0].environments[0].name", "'dev-1' is not a valid name", name="environment-name"),
    _case(P4 + "    apps: [fast-api]\n", 5, "projects[0].apps[0]", "'fast-api' is not a valid app name",
          name="bare-app-name"),
    _case(P4 + "    apps:\n      - name: FastAPI\n", 6, "projects[0].apps[0].name", "'FastAPI' is not a valid name",
          name="app-name"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: Coelho_Dev\n", 6,
          "projects[0].environments[0].argocd_app", "'Coelho_Dev' is not a Kubernetes name", name="argocd-app-name"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        deploy_namespace: a.b\n", 7,
          "projects[0].environments[0].deploy_namespace", "'a.b' is not a Kubernetes namespace",
          name="deploy-namespace"),
    _case(P4 + "    apps:\n      - name: fastapi\n        values_key: coelho..fastapi\n", 7,
          "projects[0].apps[0].values_key", "'coelho..fastapi' is not a key path", name="values-key"),
    # config.py's validators, their messages naming the file's location.
    _case(_url("ftp://git.example/r.git"), 3, "projects[0].git_url", "='ftp://git.example/r.git' is not a Git URL",
          name="git-url-scheme"),
    _case(_url("https://bot:hunter2@git.example/r.git"), 3, "projects[0].git_url",
          "must not embed credentials; put the token in the variable named by git_token_env",
          name="git-url-credentials"),
    _case(_url("https://git.example/r.git?private_token=hunter2"), 3, "projects[0].git_url",
          "must not carry a credential in its query string", name="git-url-query-token"),
    _case(P4 + "    git_branch: bad..branch\n", 5, "projects[0].git_branch", "='bad..branch' is not a valid branch name",
          name="branch"),
    _case(P4 + "    registry: Not/A Registry\n", 5, "projects[0].registry", "is not an image prefix", name="registry"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        values_path: /etc/values.yaml\n", 7,
          "projects[0].environments[0].values_path", "must be a path inside the repository", name="values-absolute"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        chart_path: ../chart\n", 7,
          "projects[0].environments[0].chart_path", "must be a path inside the repository", name="chart-outside"),
    _case(P4 + "    apps:\n      - name: fastapi\n        context: ../api\n", 7, "projects[0].apps[0].context",
          "must be a path inside the repository", name="context-outside"),
    # Secrets by name: a valid variable name, set in the environment, and https unless loopback.
    _case(P4 + "    git_token_env: glpat-SECRET-git-token\n", 5, "projects[0].git_token_env",
          "must be the name of an environment variable ([A-Z_][A-Z0-9_]*) holding the git token",
          name="token-env-name"),
    _case(P4 + "    git_token_env: REALTIME_GIT_TOKEN\n", 5, "projects[0].git_token_env",
          "environment variable REALTIME_GIT_TOKEN is not set", {}, name="token-env-unset"),
    _case(P4 + "    git_token_env: REALTIME_GIT_TOKEN\n", 5, "projects[0].git_token_env",
          "environment variable REALTIME_GIT_TOKEN is not set", {"REALTIME_GIT_TOKEN": " "}, name="token-env-blank"),
    _case(P4 + "    registry_username: ci\n    registry_password_env: REALTIME_REGISTRY_PASSWORD\n", 6,
          "projects[0].registry_password_env", "environment variable REALTIME_REGISTRY_PASSWORD is not set",
          {"REALTIME_GIT_TOKEN": SECRETS[0]}, name="password-env-unset"),
    _case(P4 + "    registry_username: ci\n", 5, "projects[0].registry_username",
          "registry_password_env is not set: registry credentials need both", name="username-alone"),
    _case(P4 + "    registry_password_env: REALTIME_REGISTRY_PASSWORD\n", 5, "projects[0].registry_password_env",
          "registry_username is not set", name="password-alone"),
    _case(_url("http://git.example/r.git") + "    git_token_env: REALTIME_GIT_TOKEN\n", 5,
          "projects[0].git_token_env", "is set but git_url='http://git.example/r.git' is plain http:// to a "
          "non-loopback host", name="token-over-http"),
    # promote_from and promotion.
    _case(P3 + "    environments:\n      - {name: dev, argocd_app: a}\n      - {name: prod, argocd_app: b, "
          "values_path: p.yaml, promote_from: stage}\n", 6, "projects[0].environments[1].promote_from",
          "unknown environment 'stage' (this project has: dev, prod)", name="promote-from-unknown"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        promote_from: dev\n", 7,
          "projects[0].environments[0].promote_from", "cannot promote from itself", name="promote-from-itself"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        promote_from: prod\n"
          "      - name: prod\n        argocd_app: b\n        values_path: p.yaml\n        promote_from: dev\n", 7,
          "projects[0].environments[0].promote_from", "promotion cycle dev -> prod -> dev", name="cycle"),
    # Three: reported where the first member is, in promotion order (b promotes to c, c to a, a to b).
    _case(P3 + "    environments:\n      - {name: x, argocd_app: x, values_path: x.yaml}\n"
          "      - {name: b, argocd_app: b, values_path: b.yaml, promote_from: a}\n"
          "      - {name: c, argocd_app: c, values_path: c.yaml, promote_from: b}\n"
          "      - {name: a, argocd_app: a, values_path: a.yaml, promote_from: c}\n", 6,
          "projects[0].environments[1].promote_from", "promotion cycle b -> c -> a -> b", name="cycle-of-three"),
    _case(P3 + "    environments:\n      - {name: dev, argocd_app: a}\n      - {name: prod, argocd_app: b, "
          "values_path: p.yaml, promote_from: dev, promotion: nightly}\n", 6,
          "projects[0].environments[1].promotion", "'nightly' is neither auto nor manual", name="promotion-value"),
    _case(P3 + "    environments:\n      - name: dev\n        argocd_app: a\n        promotion: auto\n", 7,
          "projects[0].environments[0].promotion", "only allowed with promote_from", name="promotion-alone"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment", "env"), ERRORS)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str, fragment: str,
                                       env: dict[str, str] | None) -> None:
    message = _error(tmp_path, text, env)
    _at(message, line, key)
    assert fragment in message, message


def test_no_apps_listed_and_none_found_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, P4)
    with pytest.raises(TargetsError) as info:
        load_targets(path, apps_root=_apps_root(tmp_path), env={})
    _at(str(info.value), 2, "projects[0].apps")
    assert f"no apps listed and no apps/<name>/Dockerfile under {tmp_path / 'repo'}" in str(info.value)


def test_discovered_apps_with_invalid_names_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, P4)
    with pytest.raises(TargetsError) as info:
        load_targets(path, apps_root=_apps_root(tmp_path, "fastapi", "Web-UI"), env={})
    _at(str(info.value), 2, "projects[0].apps")
    assert "apps/Web-UI/Dockerfile" in str(info.value)


# -- duplicates -----------------------------------------------------------------------------------

TWO = """\
projects:
  - name: realtime
    git_url: https://git.example/realtime.git
    apps: [fastapi]
    environments:
      - name: dev
        argocd_app: realtime-dev
        values_path: k3d/helm/values-dev.yaml
"""  # lines 1-8; the cases add a second environment or project


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    pytest.param(TWO + "  - name: realtime\n    git_url: https://git.example/other.git\n"
                 "    environments: [{name: dev, argocd_app: other-dev}]\n", 9, "projects[1].name",
                 "duplicate project 'realtime' (first at line 2)", id="project"),
    pytest.param(TWO + "      - name: dev\n        argocd_app: realtime-dev2\n", 9,
                 "projects[0].environments[1].name", "duplicate environment 'dev' (first at line 6)", id="environment"),
    pytest.param(TWO.replace("[fastapi]", "[fastapi, sveltekit, fastapi]"), 4, "projects[0].apps[2]",
                 "duplicate app 'fastapi' (first at line 4)", id="app"),
    pytest.param(TWO.replace("apps: [fastapi]", "apps:\n      - fastapi\n      - {name: api, values_key: fastapi}"),
                 6, "projects[0].apps[1]", "has the values key 'fastapi' of app 'fastapi' (line 5)", id="values-key"),
    # Spelled differently, the same file: the two environments would overwrite each other's tags.
    pytest.param(TWO + "      - name: prod\n        argocd_app: realtime-prod\n"
                 "        values_path: ./k3d/helm//values-dev.yaml\n", 11, "projects[0].environments[1].values_path",
                 "environment 'dev' (line 6) already writes k3d/helm/values-dev.yaml", id="values-path"),
    pytest.param(TWO.replace("        values_path: k3d/helm/values-dev.yaml\n", "")
                 + "      - name: prod\n        argocd_app: realtime-prod\n", 8, "projects[0].environments[1]",
                 "already writes k3d/helm/values.yaml", id="values-path-default"),
    pytest.param(TWO + "  - name: batch\n    git_url: https://git.example/batch.git\n    apps: [fastapi]\n"
                 "    environments:\n      - name: dev\n        argocd_namespace: argocd\n"
                 "        argocd_app: realtime-dev\n", 15, "projects[1].environments[0].argocd_app",
                 "Argo CD application realtime-dev in namespace argocd is already the target of realtime/dev (line 7)",
                 id="argocd-app"),
    # One writer per project: a second project on the same branch would race it.
    pytest.param(TWO + "  - name: batch\n    git_url: https://git.example/realtime\n    apps: [fastapi]\n"
                 "    environments: [{name: dev, argocd_app: batch-dev}]\n", 10, "projects[1].git_url",
                 "project 'realtime' (line 2) already delivers to this repository's master branch", id="same-branch"),
])
def test_duplicates_name_both_places(tmp_path: Path, text: str, line: int, key: str, fragment: str) -> None:
    message = _error(tmp_path, text)
    _at(message, line, key)
    assert fragment in message, message


def test_two_projects_on_different_branches_of_one_repository_are_fine(tmp_path: Path) -> None:
    targets = _load(tmp_path, TWO + "  - name: batch\n    git_url: https://git.example/realtime.git\n"
                    "    git_branch: batch\n    apps: [fastapi]\n    environments: [{name: dev, argocd_app: b}]\n")
    assert [t.label for t in targets] == ["realtime/dev", "batch/dev"]


def test_errors_carry_their_location_as_attributes(tmp_path: Path) -> None:
    with pytest.raises(TargetsError) as info:
        _load(tmp_path, P4.replace("name: realtime", "name: Realtime"))
    assert (info.value.line, info.value.key) == (2, "projects[0].name")
    assert info.value.file == str(tmp_path / "targets.yaml") and isinstance(info.value, ConfigError)


MERGED = """\
projects:
  - name: realtime
    git_url: https://git.example/realtime.git
    environments:
      - &dev
        name: dev
        argocd_app: realtime-dev
        deploy_namespace: coelho-dev
        values_path: dev.yaml
      - <<: *dev
        name: prod
        argocd_app: realtime-prod
"""


def test_merge_keys_share_settings_between_environments(tmp_path: Path) -> None:
    _, prod = _load(tmp_path, MERGED.replace("        argocd_app: realtime-prod\n",
                                             "        argocd_app: realtime-prod\n        values_path: prod.yaml\n"))
    assert (prod.environment.name, prod.environment.deploy_namespace, prod.environment.values_path) == (
        "prod", "coelho-dev", "prod.yaml")


def test_a_merged_value_is_reported_where_it_is_written(tmp_path: Path) -> None:
    message = _error(tmp_path, MERGED)  # prod inherits dev's values file
    _at(message, 9, "projects[0].environments[1].values_path")
    assert "environment 'dev' (line 6) already writes dev.yaml" in message
