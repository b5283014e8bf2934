"""Where the pipeline delivers: projects and their environments, from the file COELHO_TARGETS names.

Without COELHO_TARGETS the COELHO_* variables describe one project with one environment
(``targets_from_settings``), and every Dagster name stays as it was before targets existed. The file:

.. code-block:: yaml

    projects:
      - name: realtime                  # [a-z][a-z0-9]*(_[a-z0-9]+)*: "__" separates parts of Dagster names
        git_url: https://gitlab.example.com/ml/coelho-realtime.git
        git_branch: master              # default master
        git_token_env: REALTIME_GIT_TOKEN   # NAME of the variable holding the token, never the token
        registry: registry.example.com/coelho   # default 127.0.0.1:5000/coelho
        registry_username: ci           # with registry_password_env: both or neither
        registry_password_env: REALTIME_REGISTRY_PASSWORD
        apps:                           # default: every apps/<name>/Dockerfile under the loader's apps_root
          - name: fastapi
            context: services/api       # default apps/<name>
            values_key: fastapi         # default camelCase(name); may be dotted (coelho.fastapi)
          - kafka_producers             # same as {name: kafka_producers}
        environments:
          - name: dev
            values_path: k3d/helm/values-dev.yaml   # default k3d/helm/values.yaml
            chart_path: k3d/helm        # default: the directory of values_path
            argocd_app: coelho-realtime-dev         # required
            argocd_namespace: argocd    # default argocd
            deploy_namespace: coelho-dev            # default coelho-realtime
          - name: prod
            values_path: k3d/helm/values-prod.yaml
            argocd_app: coelho-realtime-prod
            promote_from: dev           # another environment of the same project
            promotion: manual           # auto | manual (default); only with promote_from
            release_name: coelho-realtime-prod   # default: argocd_app (Argo CD's default release name)
            application_path: k3d/argocd/application-prod.yaml   # default k3d/argocd/application.yaml

Every error is a ``TargetsError`` whose message starts ``<file>:<line>: <key path>:``. Messages never
quote the file's text or an environment variable's value: the file sits next to secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import dagster as dg
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from coelho_pipeline.catalog import App, discover_apps
from coelho_pipeline.config import (
    ConfigError,
    Settings,
    _check_branch,
    _check_git_url,
    _check_registry,
    _check_relative_path,
    _check_token_transport,
)


class TargetsError(ConfigError):
    """The targets file is missing or wrong; the message names the file, the line and the key path."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, key: str = "") -> None:
        super().__init__(message)
        self.file, self.line, self.key = file, line, key


@dataclass(frozen=True)
class Environment:
    """One deployment of a project: a values file in its repository and the Argo CD app that syncs it."""

    name: str
    argocd_app: str
    values_path: str = "k3d/helm/values.yaml"
    chart_path: str = "k3d/helm"
    argocd_namespace: str = "argocd"
    deploy_namespace: str = "coelho-realtime"
    promote_from: str | None = None
    promotion: str = "manual"  # "auto" | "manual"; meaningful only with promote_from
    # The Helm release Argo CD installs (the Deployments are <release>-<component>); "": the
    # Application's name, Argo CD's default.
    release_name: str = ""
    # The Application manifest whose Helm parameters the blocking render check applies.
    application_path: str = "k3d/argocd/application.yaml"


@dataclass(frozen=True)
class Project:
    """One source repository and branch: its apps, its registry, its environments."""

    name: str
    git_url: str
    apps: tuple[App, ...]
    environments: tuple[Environment, ...]
    git_branch: str = "master"
    git_token_env: str | None = None  # the variable's name; the token is read where it is used
    registry: str = "127.0.0.1:5000/coelho"
    registry_username: str | None = None
    registry_password_env: str | None = None


@dataclass(frozen=True)
class TargetNames:
    """How one target's Dagster objects are named: plain for the only target, else with the target in.

    ``project`` is None for the only target. Kept apart from ``Target`` so the ``coelho`` CLI can
    name a target's jobs from ``--target project/environment`` without loading the targets file.
    """

    project: str | None = None
    environment: str | None = None

    @classmethod
    def parse(cls, label: str | None) -> TargetNames:
        """``realtime/dev`` (or None: the only target)."""
        if not label:
            return cls()
        project, sep, environment = label.partition("/")
        if not (sep and _NAME_RE.match(project) and _NAME_RE.match(environment)):
            raise ValueError(f"{label!r} is not project/environment (names as in the targets file)")
        return cls(project, environment)

    def key(self, name: str) -> dg.AssetKey:
        """The asset key of ``name`` for this target (a prefix keeps the targets' graphs apart)."""
        if self.project is None:
            return dg.AssetKey([name])
        return dg.AssetKey([self.project, str(self.environment), name])

    def name(self, base: str) -> str:
        """A job, sensor, schedule, op, resource, group or partitions name for this target."""
        return base if self.project is None else f"{base}__{self.project}__{self.environment}"

    def asset_op(self, name: str) -> str:
        """The op (and step) name Dagster gives the asset ``name``, as run config and step keys use it."""
        return self.key(name).to_python_identifier()


@dataclass(frozen=True)
class Target:
    """One place the pipeline delivers to: a project's environment."""

    project: Project
    environment: Environment
    single: bool = True  # the only target: every Dagster name stays as it was before targets existed

    @property
    def label(self) -> str:
        """``realtime/dev``, for messages, descriptions and the CLI's --target."""
        return f"{self.project.name}/{self.environment.name}"

    @property
    def names(self) -> TargetNames:
        return TargetNames() if self.single else TargetNames(self.project.name, self.environment.name)

    def key(self, name: str) -> dg.AssetKey:
        return self.names.key(name)

    def name(self, base: str) -> str:
        return self.names.name(base)

    @property
    def promote_from(self) -> str | None:
        """The environment whose verified deliveries this one takes over, without building."""
        return self.environment.promote_from

    @property
    def delivery_job(self) -> str:
        """The job that delivers one source commit here: ``promote`` where images come from upstream."""
        return self.name("promote" if self.promote_from else "deliver_commit")

    def root(self) -> Target:
        """The environment at the start of this one's promotion chain (itself, without promote_from):
        its partitions (the source commits it was pushed) are the whole chain's."""
        by_name = {e.name: e for e in self.project.environments}
        environment = self.environment
        while environment.promote_from:
            environment = by_name[environment.promote_from]
        return replace(self, environment=environment)

    @property
    def writer_tag_value(self) -> str:
        """Value of the manifest-writer run tag: environments of a project share its branch, so one writer."""
        return "main" if self.single else self.project.name

    @property
    def pool(self) -> str:
        """Concurrency pool of the assets that write the project's branch."""
        return "git_manifest" if self.single else f"git_manifest__{self.project.name}"


def upstream_of(target: Target, targets: Sequence[Target]) -> Target | None:
    """The target ``target`` promotes from, or None when it has no ``promote_from``.

    Raises ValueError when ``targets`` lacks it: answering None would let the environment skip its gate.
    """
    upstream = target.environment.promote_from
    if upstream is None:
        return None
    for candidate in targets:
        if candidate.project.name == target.project.name and candidate.environment.name == upstream:
            return candidate
    raise ValueError(f"{target.label} promotes from {upstream!r}, which is not among the targets given")


def targets_from_settings(settings: Settings, apps: Sequence[App]) -> tuple[Target, ...]:
    """The one target the COELHO_* variables describe, named "default"/"default", with plain Dagster names."""
    if settings.targets_file:
        # git_url is "" then: a target built from it would point nowhere.
        raise ValueError("COELHO_TARGETS is set: load the targets with load_targets(settings.targets_file, ...)")
    environment = Environment(
        name="default",
        argocd_app=settings.argocd_app,
        values_path=settings.values_path,
        chart_path=settings.chart_path,
        argocd_namespace=settings.argocd_namespace,
        release_name="coelho-realtime",  # what the single target has always rendered and compared
    )
    project = Project(
        name="default",
        git_url=settings.git_url,
        apps=tuple(apps),
        environments=(environment,),
        git_branch=settings.git_branch,
        git_token_env="COELHO_GIT_TOKEN" if settings.git_token else None,
        registry=settings.registry,
        registry_username=settings.registry_username,
        registry_password_env="COELHO_REGISTRY_PASSWORD" if settings.registry_password else None,
    )
    return (Target(project=project, environment=environment, single=True),)


def load_targets(path: str | Path, *, apps_root: Path, env: Mapping[str, str] | None = None) -> tuple[Target, ...]:
    """Reads and validates a targets file.

    Args:
        path: the file (COELHO_TARGETS).
        apps_root: the directory whose ``apps/<name>/Dockerfile`` are a project's apps when it lists none.
        env: where the variables named by ``*_env`` keys must be set; ``os.environ`` by default.

    Returns:
        The targets in file order (projects, then environments), except that an environment comes after
        the one it promotes from. ``single`` is True iff there is exactly one.

    Raises:
        TargetsError: naming the file, the line and the key path.
    """
    file = str(path)
    text = _read(Path(path))
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as e:
        line = _error_line(e, text)
        raise TargetsError(f"{file}:{line}: not valid YAML{_yaml_problem(e)}", file=file, line=line) from None
    return _Parser(file, os.environ if env is None else env, apps_root).targets(data)


def _read(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TargetsError(f"COELHO_TARGETS: {path} does not exist", file=str(path)) from None
    except IsADirectoryError:
        raise TargetsError(f"COELHO_TARGETS: {path} is a directory, not a targets file", file=str(path)) from None
    except OSError as e:
        raise TargetsError(f"COELHO_TARGETS: {path} cannot be read ({e.strerror})", file=str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TargetsError(f"{path}:{line}: not UTF-8 text", file=str(path), line=line) from None


def _error_line(error: YAMLError, text: str) -> int:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(error, "position", None)  # ReaderError: a character YAML does not allow
    return text[:position].count("\n") + 1 if isinstance(position, int) else 1


def _yaml_problem(error: YAMLError) -> str:
    """The parser's complaint when it quotes nothing from the file (a duplicate key quotes its value)."""
    if isinstance(error, DuplicateKeyError):
        return ": a key appears twice in one mapping"
    problem = error.problem if isinstance(error, MarkedYAMLError) else None
    if problem and not any(q in problem for q in "'\"`"):
        return f": {problem}"
    return ""


# Names become parts of Dagster names (asset keys, f"{base}__{project}__{env}"), so no double underscore.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_NAME_RULE = "lower-case letters and digits in words joined by single underscores, starting with a letter"
_ENV_VAR_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Kubernetes names: an Application is a DNS-1123 subdomain, a namespace a DNS-1123 label.
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUES_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

_TOP_KEYS = ("projects",)
_PROJECT_KEYS = ("name", "git_url", "git_branch", "git_token_env", "registry", "registry_username",
                 "registry_password_env", "apps", "environments")
_APP_KEYS = ("name", "context", "values_key")
_ENVIRONMENT_KEYS = ("name", "values_path", "chart_path", "argocd_app", "argocd_namespace", "deploy_namespace",
                     "promote_from", "promotion", "release_name", "application_path")
# Keys someone might write with the secret itself as the value: point them to the *_env key.
_SECRET_KEYS = {"git_token": "git_token_env", "token": "git_token_env", "git_password": "git_token_env",
                "registry_password": "registry_password_env", "password": "registry_password_env",
                "registry_token": "registry_password_env"}


@dataclass(frozen=True)
class _Loc:
    """Where a value sits: its line (1-based) and key path."""

    line: int
    key: str

    def child(self, mapping: CommentedMap, key: Any) -> _Loc:
        """The location of ``key`` in ``mapping``; the mapping's own line when the key is absent."""
        path = f"{self.key}.{key}" if self.key else str(key)
        line = _key_line(mapping, key)
        return _Loc(self.line if line is None else line + 1, path)

    def item(self, seq: CommentedSeq, index: int) -> _Loc:
        return _Loc(seq.lc.item(index)[0] + 1, f"{self.key}[{index}]")


def _key_line(mapping: CommentedMap, key: Any) -> int | None:
    """The 0-based line ``key`` is written on: in ``mapping``, or in the anchor a ``<<:`` merge took it from."""
    if key in (mapping.lc.data or {}):  # None for an empty mapping
        return mapping.lc.key(key)[0]
    for merged in getattr(mapping, "merge", None) or ():
        source = merged[1] if isinstance(merged, tuple) else merged  # older ruamel: (position, mapping)
        if isinstance(source, CommentedMap) and key in source:
            return _key_line(source, key)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "a value of another type"  # dates, !tagged values


def _normal_path(value: str) -> str:
    """``./k3d/helm/`` and ``k3d/helm`` are the same place; compare and store one spelling."""
    return str(PurePosixPath(value))


@dataclass(frozen=True)
class _EnvironmentEntry:
    environment: Environment
    app_loc: _Loc  # of argocd_app
    promote_from_loc: _Loc | None


class _Parser:
    """One pass over the parsed document; the first problem found raises."""

    def __init__(self, file: str, env: Mapping[str, str], apps_root: Path) -> None:
        self.file, self.env, self.apps_root = file, env, apps_root
        self._discovered: tuple[App, ...] | None = None

    def fail(self, loc: _Loc, message: str) -> NoReturn:
        raise TargetsError(f"{self.where(loc)}: {message}", file=self.file, line=loc.line, key=loc.key)

    def where(self, loc: _Loc) -> str:
        return f"{self.file}:{loc.line}: {loc.key or '(top level)'}"

    def reuse(self, loc: _Loc, check: Callable[..., None], *args: str) -> None:
        """Runs a config.py validator, its message carrying this location, and re-raises it as ours."""
        try:
            check(*args)
        except ConfigError as e:
            raise TargetsError(str(e), file=self.file, line=loc.line, key=loc.key) from None

    # -- shapes -----------------------------------------------------------------------------------

    def mapping(self, value: Any, loc: _Loc, allowed: tuple[str, ...], required: tuple[str, ...]) -> CommentedMap:
        if not isinstance(value, CommentedMap):
            self.fail(loc, f"mapping expected, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                where = loc.child(value, key)
                hint = ""
                if key in _SECRET_KEYS:
                    hint = (f"; secrets do not belong in this file: put it in an environment variable and give "
                            f"that variable's name in {_SECRET_KEYS[key]}")
                self.fail(where, f"unknown key{hint} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.fail(loc.child(value, key), "missing (required)")
        return value

    def string(self, mapping: CommentedMap, key: str, loc: _Loc) -> str | None:
        """The stripped string at ``key``, None when the key is absent."""
        if key not in mapping:
            return None
        value, where = mapping[key], loc.child(mapping, key)
        if not isinstance(value, str):
            hint = " (omit the key for the default)" if value is None else ""
            self.fail(where, f"string expected, got {_kind(value)}{hint}")
        if not value.strip():
            self.fail(where, "must not be empty")
        return str(value).strip()

    def sequence(self, mapping: CommentedMap, key: str, loc: _Loc, empty_hint: str) -> CommentedSeq | None:
        if key not in mapping:
            return None
        value, where = mapping[key], loc.child(mapping, key)
        if not isinstance(value, CommentedSeq):
            self.fail(where, f"list expected, got {_kind(value)}")
        if not value:
            self.fail(where, f"empty list{empty_hint}")
        return value

    def name(self, mapping: CommentedMap, loc: _Loc) -> str:
        name = self.string(mapping, "name", loc)
        assert name is not None  # required keys are checked by mapping()
        if not _NAME_RE.match(name):
            self.fail(loc.child(mapping, "name"), f"{name!r} is not a valid name: {_NAME_RULE}")
        return name

    def env_var(self, mapping: CommentedMap, key: str, loc: _Loc, holds: str) -> str | None:
        variable = self.string(mapping, key, loc)
        if variable is None:
            return None
        where = loc.child(mapping, key)
        if not _ENV_VAR_RE.match(variable):
            # Not echoed: a value that is no variable name may well be the secret itself.
            self.fail(where, f"must be the name of an environment variable ([A-Z_][A-Z0-9_]*) holding the "
                             f"{holds}, not the {holds} itself")
        if not self.env.get(variable, "").strip():
            self.fail(where, f"environment variable {variable} is not set (it should hold the {holds})")
        return variable

    def path(self, mapping: CommentedMap, key: str, loc: _Loc, default: str) -> str:
        value = self.string(mapping, key, loc)
        if value is None:
            return default
        self.reuse(loc.child(mapping, key), _check_relative_path, self.where(loc.child(mapping, key)), value)
        return _normal_path(value)

    def kube_name(self, mapping: CommentedMap, key: str, loc: _Loc, default: str | None, *, label: bool) -> str:
        value = self.string(mapping, key, loc)
        if value is None:
            assert default is not None  # argocd_app is required, checked by mapping()
            return default
        pattern, limit, kind, chars = ((_DNS_LABEL_RE, 63, "namespace", "'-'") if label
                                       else (_DNS_SUBDOMAIN_RE, 253, "name", "'-', '.'"))
        if len(value) > limit or not pattern.match(value):
            self.fail(loc.child(mapping, key), f"{value!r} is not a Kubernetes {kind} (lower-case letters, digits "
                                               f"and {chars}; at most {limit} characters)")
        return value

    # -- the document -----------------------------------------------------------------------------

    def targets(self, data: Any) -> tuple[Target, ...]:
        top = _Loc(1, "")
        if data is None:
            self.fail(top, "the file is empty: it should be a mapping with a projects list")
        if not isinstance(data, CommentedMap):
            self.fail(top, f"mapping with a projects list expected, got {_kind(data)}")
        self.mapping(data, top, _TOP_KEYS, ("projects",))
        projects = self.sequence(data, "projects", top, ": give at least one project")
        assert projects is not None  # required
        projects_loc = top.child(data, "projects")

        parsed: list[tuple[Project, list[_EnvironmentEntry]]] = []
        project_lines: dict[str, int] = {}
        branch_owners: dict[tuple[str, str], tuple[str, int]] = {}
        argocd_owners: dict[tuple[str, str], tuple[str, int]] = {}
        for index, item in enumerate(projects):
            loc = projects_loc.item(projects, index)
            project, entries = self.project(item, loc)
            name_loc = loc.child(item, "name")
            if project.name in project_lines:
                self.fail(name_loc, f"duplicate project {project.name!r} (first at line {project_lines[project.name]})")
            project_lines[project.name] = name_loc.line
            # Each project has one writer of its branch; two projects on one branch would race it.
            branch = (_same_remote(project.git_url), project.git_branch)
            if branch in branch_owners:
                other, line = branch_owners[branch]
                self.fail(loc.child(item, "git_url"), f"project {other!r} (line {line}) already delivers to this "
                          f"repository's {project.git_branch} branch: make these environments of one project")
            branch_owners[branch] = (project.name, loc.line)
            for entry in entries:
                environment = entry.environment
                app = (environment.argocd_namespace, environment.argocd_app)
                if app in argocd_owners:
                    other, line = argocd_owners[app]
                    self.fail(entry.app_loc, f"Argo CD application {app[1]} in namespace {app[0]} is already the "
                                             f"target of {other} (line {line})")
                argocd_owners[app] = (f"{project.name}/{environment.name}", entry.app_loc.line)
            parsed.append((project, entries))

        ordered = [(project, environment) for project, entries in parsed
                   for environment in _upstream_first([e.environment for e in entries])]
        single = len(ordered) == 1
        return tuple(Target(project=p, environment=e, single=single) for p, e in ordered)

    def project(self, value: Any, loc: _Loc) -> tuple[Project, list[_EnvironmentEntry]]:
        m = self.mapping(value, loc, _PROJECT_KEYS, ("name", "git_url", "environments"))
        name = self.name(m, loc)

        git_url = self.string(m, "git_url", loc)
        assert git_url is not None
        url_loc = loc.child(m, "git_url")
        self.reuse(url_loc, _check_git_url, git_url, self.where(url_loc), "the variable named by git_token_env")
        branch = self.string(m, "git_branch", loc) or "master"
        self.reuse(loc.child(m, "git_branch"), _check_branch, branch, self.where(loc.child(m, "git_branch")))
        token_env = self.env_var(m, "git_token_env", loc, "git token")
        if token_env:
            token_loc = loc.child(m, "git_token_env")
            self.reuse(token_loc, _check_token_transport, git_url, "git_url", self.where(token_loc))

        registry = (self.string(m, "registry", loc) or Project.registry).rstrip("/")
        self.reuse(loc.child(m, "registry"), _check_registry, registry, self.where(loc.child(m, "registry")))
        username = self.string(m, "registry_username", loc)
        password_env = self.env_var(m, "registry_password_env", loc, "registry password")
        if bool(username) != bool(password_env):
            present, missing = ("registry_username", "registry_password_env") if username else (
                "registry_password_env", "registry_username")
            self.fail(loc.child(m, present), f"{missing} is not set: registry credentials need both a username "
                                             "and a password")

        apps = self.apps(m, loc)
        environments = self.environments(m, loc)
        project = Project(
            name=name,
            git_url=git_url,
            apps=apps,
            environments=tuple(e.environment for e in environments),
            git_branch=branch,
            git_token_env=token_env,
            registry=registry,
            registry_username=username,
            registry_password_env=password_env,
        )
        return project, environments

    def apps(self, project: CommentedMap, loc: _Loc) -> tuple[App, ...]:
        items = self.sequence(project, "apps", loc, ": omit apps to deliver every apps/<name>/Dockerfile")
        apps_loc = loc.child(project, "apps")
        if items is None:
            return self.discovered(_Loc(loc.line, apps_loc.key))
        apps: list[App] = []
        names: dict[str, int] = {}
        values_keys: dict[str, tuple[str, int]] = {}
        for index, item in enumerate(items):
            item_loc = apps_loc.item(items, index)
            if isinstance(item, str):  # the bare name
                app = self.bare_app(item, item_loc)
                name_loc = item_loc
            elif not isinstance(item, CommentedMap):
                self.fail(item_loc, f"app name or mapping expected, got {_kind(item)}")
            else:
                app = self.app(item, item_loc)
                name_loc = item_loc.child(item, "name")
            if app.name in names:
                self.fail(name_loc, f"duplicate app {app.name!r} (first at line {names[app.name]})")
            names[app.name] = name_loc.line
            if app.values_key in values_keys:
                other, line = values_keys[app.values_key]
                self.fail(item_loc, f"app {app.name!r} has the values key {app.values_key!r} of app {other!r} "
                                    f"(line {line}): their image tags would overwrite each other")
            values_keys[app.values_key] = (app.name, item_loc.line)
            apps.append(app)
        return tuple(apps)

    def bare_app(self, value: str, loc: _Loc) -> App:
        name = str(value).strip()
        if not _NAME_RE.match(name):
            self.fail(loc, f"{name!r} is not a valid app name: {_NAME_RULE}")
        return App(name)

    def app(self, value: CommentedMap, loc: _Loc) -> App:
        m = self.mapping(value, loc, _APP_KEYS, ("name",))
        name = self.name(m, loc)
        context = self.path(m, "context", loc, "")
        values_key = self.string(m, "values_key", loc) or ""
        if values_key and not _VALUES_KEY_RE.match(values_key):
            self.fail(loc.child(m, "values_key"), f"{values_key!r} is not a key path (keys of letters, digits, "
                                                  "'_' or '-', joined with '.')")
        # The conventional values stay empty, so App("fastapi") from a file equals App("fastapi").
        default = App(name)
        return App(name,
                   build_context="" if context == default.context else context,
                   values_key_path="" if values_key == default.values_key else values_key)

    def discovered(self, loc: _Loc) -> tuple[App, ...]:
        if self._discovered is None:
            self._discovered = discover_apps(self.apps_root)
        if not self._discovered:
            self.fail(loc, f"no apps listed and no apps/<name>/Dockerfile under {self.apps_root}: list them "
                           "under apps")
        for app in self._discovered:
            if not _NAME_RE.match(app.name):
                self.fail(loc, f"apps/{app.name}/Dockerfile under {self.apps_root}: {app.name!r} is not a valid "
                               f"app name ({_NAME_RULE}); list the apps under apps")
        return self._discovered

    def environments(self, project: CommentedMap, loc: _Loc) -> list[_EnvironmentEntry]:
        items = self.sequence(project, "environments", loc, ": give at least one environment")
        assert items is not None  # required
        envs_loc = loc.child(project, "environments")
        entries: list[_EnvironmentEntry] = []
        names: dict[str, int] = {}
        values_paths: dict[str, tuple[str, int]] = {}
        for index, item in enumerate(items):
            item_loc = envs_loc.item(items, index)
            entry = self.environment(item, item_loc)
            environment = entry.environment
            name_loc = item_loc.child(item, "name")
            if environment.name in names:
                self.fail(name_loc, f"duplicate environment {environment.name!r} (first at line "
                                    f"{names[environment.name]})")
            names[environment.name] = name_loc.line
            if environment.values_path in values_paths:
                other, line = values_paths[environment.values_path]
                where = item_loc.child(item, "values_path") if "values_path" in item else item_loc
                self.fail(where, f"environment {other!r} (line {line}) already writes {environment.values_path}: "
                                 "the two would overwrite each other's image tags")
            values_paths[environment.values_path] = (environment.name, name_loc.line)
            entries.append(entry)
        self.check_promotions(entries)
        return entries

    def environment(self, value: Any, loc: _Loc) -> _EnvironmentEntry:
        m = self.mapping(value, loc, _ENVIRONMENT_KEYS, ("name", "argocd_app"))
        name = self.name(m, loc)
        values_path = self.path(m, "values_path", loc, Environment.values_path)
        chart_path = self.path(m, "chart_path", loc, str(PurePosixPath(values_path).parent))
        promote_from = self.string(m, "promote_from", loc)
        promotion = self.string(m, "promotion", loc)
        if promotion is not None:
            if promotion not in ("auto", "manual"):
                self.fail(loc.child(m, "promotion"), f"{promotion!r} is neither auto nor manual")
            if promote_from is None:
                self.fail(loc.child(m, "promotion"), "only allowed with promote_from (the environment to promote "
                                                     "from)")
        environment = Environment(
            name=name,
            argocd_app=self.kube_name(m, "argocd_app", loc, None, label=False),
            values_path=values_path,
            chart_path=chart_path,
            argocd_namespace=self.kube_name(m, "argocd_namespace", loc, Environment.argocd_namespace, label=True),
            deploy_namespace=self.kube_name(m, "deploy_namespace", loc, Environment.deploy_namespace, label=True),
            promote_from=promote_from,
            promotion=promotion or Environment.promotion,
            release_name=self.kube_name(m, "release_name", loc, "", label=True),
            application_path=self.path(m, "application_path", loc, Environment.application_path),
        )
        return _EnvironmentEntry(environment, loc.child(m, "argocd_app"),
                                 loc.child(m, "promote_from") if promote_from else None)

    def check_promotions(self, entries: list[_EnvironmentEntry]) -> None:
        by_name = {e.environment.name: e for e in entries}
        for entry in entries:
            upstream = entry.environment.promote_from
            if upstream is None:
                continue
            assert entry.promote_from_loc is not None
            if upstream == entry.environment.name:
                self.fail(entry.promote_from_loc, "an environment cannot promote from itself")
            if upstream not in by_name:
                self.fail(entry.promote_from_loc, f"unknown environment {upstream!r} (this project has: "
                                                  f"{', '.join(by_name)})")
        # Each environment has at most one upstream, so a cycle is found by walking upstream from each.
        for entry in entries:
            chain = [entry.environment.name]
            current = entry.environment
            while current.promote_from is not None and current.promote_from not in chain:
                chain.append(current.promote_from)
                current = by_name[current.promote_from].environment
            if current.promote_from is None:
                continue
            members = chain[chain.index(current.promote_from):]
            # Reported at the member listed first, in promotion order (upstream -> downstream).
            first = next(e for e in entries if e.environment.name in members)
            cycle = [first.environment.name]
            while len(cycle) == 1 or cycle[-1] != first.environment.name:
                cycle.append(by_name[cycle[-1]].environment.promote_from or "")
            assert first.promote_from_loc is not None
            self.fail(first.promote_from_loc, f"promotion cycle {' -> '.join(reversed(cycle))}: one environment "
                                              "must start the chain (no promote_from)")


def _upstream_first(environments: list[Environment]) -> list[Environment]:
    """File order, except that an environment follows the one it promotes from (callers build upstream first)."""
    by_name = {e.name: e for e in environments}
    ordered: list[Environment] = []
    seen: set[str] = set()

    def visit(environment: Environment) -> None:
        if environment.name in seen:
            return
        seen.add(environment.name)  # cycles were refused before, so this only stops repeats
        if environment.promote_from is not None:
            visit(by_name[environment.promote_from])
        ordered.append(environment)

    for environment in environments:
        visit(environment)
    return ordered


def _same_remote(url: str) -> str:
    """``…/x.git`` and ``…/x/`` name the same repository."""
    url = url.rstrip("/")
    return url[: -len(".git")] if url.endswith(".git") else url
