"""Settings from COELHO_* environment variables, validated once; every error names its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import yaml

from coelho_pipeline.loopback import is_loopback
from coelho_pipeline.rollout.verify import MetricCheck, VerifyConfigError, parse_metric_checks


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


_BRANCH_RE = re.compile(r"^(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<!/)(?<!\.lock)$")
# <host[:port]>/<path>, lower-case path components as Docker requires.
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?(/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_APP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know about its environment."""

    git_url: str
    git_branch: str = "master"
    git_token: str | None = field(default=None, repr=False)
    registry: str = "127.0.0.1:5000/coelho"
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    values_path: str = "k3d/helm/values.yaml"
    chart_path: str = "k3d/helm"
    argocd_app: str = "coelho-realtime"
    argocd_namespace: str = "argocd"
    kubeconfig: str | None = None
    kube_context: str | None = None
    sync_timeout: float = 600.0
    apps: tuple[str, ...] = ()
    # COELHO_TARGETS, resolved: a file of projects and environments (coelho_pipeline.targets) that
    # replaces COELHO_GIT_URL; git_url is then "".
    targets_file: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    build_network: str | None = None
    workdir: str = ""
    notify_webhooks: str | None = field(default=None, repr=False)  # their URLs carry tokens
    notify_state_dir: str = ""  # default: <workdir>/notify
    author_name: str = "coelho-pipeline"
    author_email: str = "pipeline@coelho-realtime.local"
    # After Synced+Healthy: the rollout verification and what its failure does.
    prometheus_url: str | None = None
    verify_checks: tuple[MetricCheck, ...] = ()
    rollout_timeout: float = 300.0
    verify_soak: float = 60.0
    verify_interval: float = 10.0
    auto_rollback: bool = False
    # Seconds between two looks at the branch. The daemon's sensor loop comes round every 5 s, and a
    # tick is skipped when less than this has passed since the last one: at 5 a loop that comes round
    # a moment early waits a whole loop more (ticks 5-10 s apart), at 4 every loop ticks.
    poll_interval: float = 4.0
    # Images built at the same time when a commit changes several apps.
    build_concurrency: int = 3

    @property
    def cluster_configured(self) -> bool:
        return bool(self.kubeconfig or self.kube_context)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads and validates the COELHO_* variables (see the README's configuration table)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        targets = get("COELHO_TARGETS")
        git_url = get("COELHO_GIT_URL")
        if targets and git_url:
            # Two sources of truth for the remote: say which one wins rather than guess.
            raise ConfigError("COELHO_TARGETS and COELHO_GIT_URL are both set: use one or the other (the targets "
                              "file describes the projects, each with its own git_url)")
        git_token = get("COELHO_GIT_TOKEN")
        if targets:
            git_url = ""  # the targets file names the remotes; it is validated when loaded
        elif not git_url:
            raise ConfigError("COELHO_GIT_URL is not set: give the URL of the source repository to watch")
        else:
            _check_git_url(git_url)
            if git_token:
                _check_token_transport(git_url)
        branch = get("COELHO_GIT_BRANCH") or "master"
        _check_branch(branch)
        registry = (get("COELHO_REGISTRY") or cls.registry).rstrip("/")
        _check_registry(registry)
        username, password = get("COELHO_REGISTRY_USERNAME"), get("COELHO_REGISTRY_PASSWORD")
        if bool(username) != bool(password):
            missing = "COELHO_REGISTRY_PASSWORD" if username else "COELHO_REGISTRY_USERNAME"
            raise ConfigError(f"{missing} is not set: registry credentials need both a username and a password")
        values_path = get("COELHO_VALUES_PATH") or cls.values_path
        _check_relative_path("COELHO_VALUES_PATH", values_path)
        chart_path = get("COELHO_CHART_PATH") or str(Path(values_path).parent)
        _check_relative_path("COELHO_CHART_PATH", chart_path)
        sync_timeout = _seconds(get, "COELHO_SYNC_TIMEOUT", cls.sync_timeout)
        rollout_timeout = _seconds(get, "COELHO_ROLLOUT_TIMEOUT", cls.rollout_timeout)
        verify_soak = _seconds(get, "COELHO_VERIFY_SOAK_SECONDS", cls.verify_soak, allow_zero=True)
        verify_interval = _seconds(get, "COELHO_VERIFY_INTERVAL_SECONDS", cls.verify_interval)
        _check_sync_timeout_fits_run_monitoring(sync_timeout + rollout_timeout + verify_soak, env.get("DAGSTER_HOME"))
        prometheus_url = get("COELHO_PROMETHEUS_URL")
        if prometheus_url:
            _check_prometheus_url(prometheus_url)
        verify_checks = _metric_checks(get("COELHO_VERIFY_QUERIES"))
        if verify_checks and not prometheus_url:
            raise ConfigError("COELHO_VERIFY_QUERIES is set but COELHO_PROMETHEUS_URL is not: the queries need a "
                              "Prometheus to run on")
        auto_rollback = _flag(get, "COELHO_AUTO_ROLLBACK")
        poll_interval = _seconds(get, "COELHO_POLL_INTERVAL_SECONDS", cls.poll_interval)
        build_concurrency = _positive_int(get, "COELHO_BUILD_CONCURRENCY", cls.build_concurrency)
        kubeconfig = get("KUBECONFIG")
        if kubeconfig:
            for part in kubeconfig.split(os.pathsep):
                if part and not Path(part).is_file():
                    raise ConfigError(f"KUBECONFIG names {part!r}, which is not a file")
        apps = tuple(a.strip() for a in (get("COELHO_APPS") or "").split(",") if a.strip())
        for app in apps:
            if not _APP_RE.match(app):
                raise ConfigError(f"COELHO_APPS: {app!r} is not an app directory name under apps/")
        notify_webhooks = get("COELHO_NOTIFY_WEBHOOKS")
        if notify_webhooks:
            from coelho_pipeline.notify import parse_webhooks  # notify imports this module's ConfigError

            parse_webhooks(notify_webhooks)  # a bad value stops the code location, naming the variable
        return cls(
            git_url=git_url,
            targets_file=str(Path(targets).resolve()) if targets else None,
            git_branch=branch,
            git_token=git_token,
            registry=registry,
            registry_username=username,
            registry_password=password,
            values_path=values_path,
            chart_path=chart_path,
            argocd_app=get("COELHO_ARGOCD_APP") or cls.argocd_app,
            argocd_namespace=get("COELHO_ARGOCD_NAMESPACE") or cls.argocd_namespace,
            kubeconfig=kubeconfig,
            kube_context=get("COELHO_KUBE_CONTEXT"),
            sync_timeout=sync_timeout,
            apps=apps,
            build_args=_parse_build_args(get("COELHO_BUILD_ARGS") or ""),
            build_network=get("COELHO_BUILD_NETWORK"),
            workdir=get("COELHO_WORKDIR") or str(Path(env.get("DAGSTER_HOME") or ".").resolve() / "coelho-work"),
            notify_webhooks=notify_webhooks,
            notify_state_dir=get("COELHO_NOTIFY_STATE_DIR") or "",
            prometheus_url=prometheus_url,
            verify_checks=verify_checks,
            rollout_timeout=rollout_timeout,
            verify_soak=verify_soak,
            verify_interval=verify_interval,
            auto_rollback=auto_rollback,
            poll_interval=poll_interval,
            build_concurrency=build_concurrency,
        )


def _positive_int(get: Callable[[str], str | None], name: str, default: int) -> int:
    text = get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r} is not a whole number of at least 1")
    return value


def _seconds(get: Callable[[str], str | None], name: str, default: float, *, allow_zero: bool = False) -> float:
    text = get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 86400):
        raise ConfigError(f"{name}={text!r} must be between {'0' if allow_zero else 'more than 0'} and 86400 seconds")
    return value


def _flag(get: Callable[[str], str | None], name: str) -> bool:
    text = get(name) or "false"
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r} is not true or false")


def _check_prometheus_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"COELHO_PROMETHEUS_URL={_redacted(url)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"COELHO_PROMETHEUS_URL={_redacted(url)!r} is not an http(s):// URL of a Prometheus server")
    if parts.username or parts.password or parts.query:
        raise ConfigError("COELHO_PROMETHEUS_URL must not carry credentials or a query string: give the server's "
                          "base URL, e.g. http://prometheus.monitoring:9090")


def _metric_checks(text: str | None) -> tuple[MetricCheck, ...]:
    """COELHO_VERIFY_QUERIES: a YAML (or JSON) list of {name, query, min, max}."""
    if not text:
        return ()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"COELHO_VERIFY_QUERIES is not valid YAML{where}: "
                          f"{getattr(e, 'problem', None) or 'parse error'}") from None
    try:
        return parse_metric_checks(data, source="COELHO_VERIFY_QUERIES")
    except VerifyConfigError as e:
        raise ConfigError(str(e)) from None


# Query parameters that carry a credential on the hosting services people use (GitLab's
# private_token, OAuth's access_token, signed URLs): git would store them in .git/config and print them.
_SECRET_QUERY_RE = re.compile(r"token|passw|secret|auth|credential|api[_-]?key|signature|^sig$|^key$", re.I)


# The validators below take the names used in their messages: the COELHO_* variable by default, a
# "file:line: key" location when coelho_pipeline.targets checks a targets file.


def _check_git_url(url: str, name: str = "COELHO_GIT_URL", token: str = "COELHO_GIT_TOKEN") -> None:
    """``token`` is where the message tells the user to put the credential instead."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name}={_redacted(url)!r} is not a valid URL") from None
    if parts.scheme in ("http", "https", "git", "ssh", "file") and (parts.netloc or parts.scheme == "file"):
        if parts.scheme in ("http", "https") and (parts.username or parts.password):
            # A token or password in the URL would end up in logs and .git/config; COELHO_GIT_TOKEN is for that.
            raise ConfigError(f"{name} must not embed credentials; put the token in {token}")
        if parts.password is not None:
            # ssh://user@host is how ssh names the login; a password there is a secret in plain text.
            raise ConfigError(
                f"{name} must not embed a password ({parts.scheme}://user:***@...): "
                f"use ssh://user@host with a key, or https:// with {token}"
            )
        secret_keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)
                              if _SECRET_QUERY_RE.search(k)})
        if secret_keys:
            raise ConfigError(
                f"{name} must not carry a credential in its query string ({', '.join(secret_keys)}=***): "
                f"put the token in {token}"
            )
        return
    if not parts.scheme and (Path(url).is_absolute() or re.match(r"^[\w.-]+@[\w.-]+:", url)):
        return
    raise ConfigError(
        f"{name}={_redacted(url)!r} is not a Git URL "
        "(expected http(s)://, git://, ssh://, file:// or an absolute path)"
    )


def _check_token_transport(url: str, name: str = "COELHO_GIT_URL", token: str = "COELHO_GIT_TOKEN") -> None:
    """Refuses sending a token (``token`` names where it comes from) over plain http:// off this host."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # Basic auth over plain HTTP is readable by anyone on the path; loopback never leaves the host.
        raise ConfigError(
            f"{token} is set but {name}={_redacted(url)!r} is plain http:// to a "
            "non-loopback host: use https:// (the token would travel unencrypted)"
        )


def _check_branch(branch: str, name: str = "COELHO_GIT_BRANCH") -> None:
    if not _BRANCH_RE.match(branch):
        raise ConfigError(f"{name}={branch!r} is not a valid branch name")


def _check_registry(registry: str, name: str = "COELHO_REGISTRY") -> None:
    if not _REGISTRY_RE.match(registry):
        raise ConfigError(
            f"{name}={registry!r} is not an image prefix like 127.0.0.1:5000/coelho "
            "(host[:port] followed by lower-case path components)"
        )


def _redacted(url: str) -> str:
    """The URL with any userinfo and query replaced by ***, safe to put in a message."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    netloc = f"***@{host}{port}" if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else "", fragment=""))


def _check_sync_timeout_fits_run_monitoring(deploy_seconds: float, dagster_home: str | None) -> None:
    """The sync wait, the rollout wait and the soak must end before run monitoring kills the run
    (it would die without a message)."""
    max_runtime, source = run_monitoring_max_runtime(dagster_home)
    if max_runtime and deploy_seconds >= max_runtime:
        raise ConfigError(
            f"COELHO_SYNC_TIMEOUT + COELHO_ROLLOUT_TIMEOUT + COELHO_VERIFY_SOAK_SECONDS = {deploy_seconds:g}s is not "
            f"shorter than run_monitoring.max_runtime_seconds={max_runtime} in {source}: a delivery would be killed "
            "while waiting for Argo CD or the rollout; lower them or raise max_runtime_seconds"
        )


def run_monitoring_max_runtime(dagster_home: str | None) -> tuple[int, str]:
    """(run_monitoring.max_runtime_seconds, file) from $DAGSTER_HOME/dagster.yaml; 0 when not limited."""
    if not dagster_home:
        return 0, ""
    path = Path(dagster_home) / "dagster.yaml"
    if not path.is_file():
        return 0, str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        # Not the parser's text: it quotes the file, and dagster.yaml may hold a database password.
        raise ConfigError(f"DAGSTER_HOME: {path} is not valid YAML{where}") from None
    monitoring = data.get("run_monitoring") if isinstance(data, dict) else None
    if not isinstance(monitoring, dict) or not monitoring.get("enabled"):
        return 0, str(path)
    value = monitoring.get("max_runtime_seconds") or 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"DAGSTER_HOME: run_monitoring.max_runtime_seconds in {path} is not a whole number")
    return max(value, 0), str(path)


def _check_relative_path(name: str, value: str) -> None:
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{name}={value!r} must be a path inside the repository, relative to its root")


def _parse_build_args(text: str) -> dict[str, str]:
    """COELHO_BUILD_ARGS="PYTHON_IMAGE=coelho-base/python:3.11-slim NODE_IMAGE=..." (space separated)."""
    args: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"COELHO_BUILD_ARGS: {item!r} is not NAME=VALUE")
        args[key] = value
    return args
