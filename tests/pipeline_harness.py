"""A source repository on a real git daemon, a developer clone that pushes to it, and the pipeline's
Definitions pointed at it, the test registry and the test Docker engine."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg

from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions
from coelho_pipeline.dev import services
from coelho_pipeline.jobs import build_jobs
from coelho_pipeline.sensors import build_delivery_failure_sensor, build_git_push_sensor
from coelho_pipeline.targets import Environment, Project, Target

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
APPS = ("fastapi", "kafka_producers", "sveltekit")
# The one target of a pipeline configured by COELHO_* variables: what the policy and sensor tests
# that build no Definitions name their instance records and resources by.
_DEFAULT_ENVIRONMENT = Environment(name="default", argocd_app="coelho-realtime")
SINGLE_TARGET = Target(Project(name="default", git_url="", apps=(), environments=(_DEFAULT_ENVIRONMENT,)),
                       _DEFAULT_ENVIRONMENT)
git_push_sensor = build_git_push_sensor(SINGLE_TARGET, build_jobs(SINGLE_TARGET))
delivery_failure_sensor = build_delivery_failure_sensor(SINGLE_TARGET, build_jobs(SINGLE_TARGET))
DEV = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@coelho-realtime.local",
       "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@coelho-realtime.local"}


@dataclass
class SourceRepo:
    """The watched remote plus a developer's clone of it."""

    bare: Path
    url: str
    clone: Path
    branch: str = "master"

    def push(self, files: Mapping[str, str | None], message: str, env: Mapping[str, str] = DEV) -> str:
        services.git("pull", "-q", "--ff-only", "origin", self.branch, cwd=self.clone)
        self.commit(files, message, env)
        return self.publish()

    def commit(self, files: Mapping[str, str | None], message: str, env: Mapping[str, str] = DEV) -> str:
        """A local commit in the developer clone, not pushed yet."""
        for rel, text in files.items():
            path = self.clone / rel
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        services.git("add", "-A", cwd=self.clone)
        services.git("commit", "-q", "-m", message, cwd=self.clone, env=env)
        return services.git("rev-parse", "HEAD", cwd=self.clone)

    def publish(self) -> str:
        """Pushes the clone's commits and returns the new head of the remote branch."""
        services.git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.clone)
        return self.head()

    def head(self) -> str:
        return services.git("rev-parse", f"refs/heads/{self.branch}", cwd=self.bare)

    def show(self, rev: str, path: str) -> str:
        return services.git("show", f"{rev}:{path}", cwd=self.bare)

    def diff(self, old: str, new: str) -> str:
        return services.git("diff", "--unified=0", old, new, cwd=self.bare)

    def log(self, n: int = 20) -> list[tuple[str, str, str]]:
        """(sha, author email, subject), newest first."""
        out = services.git("log", f"-n{n}", "--format=%H%x09%ae%x09%s", self.branch, cwd=self.bare)
        return [tuple(line.split("\t", 2)) for line in out.splitlines()]  # type: ignore[misc]


def make_source_repo(git_server, *, real_apps: bool = False, values_rewrite=None, branch: str = "master") -> SourceRepo:
    """A fresh remote seeded with the apps and this repo's k3d/ exactly as shipped: its values.yaml
    names 127.0.0.1:5000/coelho, which is never the test registry (a random port), as for a user
    with their own registry. ``branch`` is its only branch."""
    name = f"coelho-{uuid.uuid4().hex[:8]}"
    app_source = (REPO_ROOT, ["apps"]) if real_apps else (FIXTURES, ["apps", "README.md"])
    services.seed_remote(git_server.path(name), [app_source, (REPO_ROOT, ["k3d"])], rewrite=values_rewrite,
                         branch=branch)
    clone = git_server.base.parent / f"{name}-dev"
    services.git("clone", "-q", git_server.url(name), str(clone), cwd=git_server.base.parent)
    return SourceRepo(bare=git_server.path(name), url=git_server.url(name), clone=clone, branch=branch)


@dataclass
class Pipeline:
    repo: SourceRepo
    settings: Settings
    instance: dg.DagsterInstance
    defs: dg.Definitions = field(init=False)

    def __post_init__(self) -> None:
        self.defs = build_definitions(self.settings)

    def with_settings(self, **changes) -> Pipeline:
        return Pipeline(self.repo, replace(self.settings, **changes), self.instance)

    def deliver(self, sha: str, *, raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
        """What the sensor's run request does: register the partition, run deliver_commit for it."""
        if sha not in self.instance.get_dynamic_partitions("source_commits"):
            self.instance.add_dynamic_partitions("source_commits", [sha])
        job = self.defs.resolve_job_def("deliver_commit")
        return job.execute_in_process(partition_key=sha, instance=self.instance, raise_on_error=raise_on_error)


def settings_for(repo: SourceRepo, registry_prefix: str, workdir: Path, base_images: Mapping[str, str],
                 **extra) -> Settings:
    return Settings(
        git_url=repo.url, git_branch=repo.branch, registry=registry_prefix,
        build_args=dict(base_images), build_network="host", workdir=str(workdir), apps=APPS,
        **{"sync_timeout": 60, "verify_soak": 1.0, "verify_interval": 0.25, "rollout_timeout": 20, **extra},
    )


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Asset key (joined with '/') -> metadata values of what the run materialized."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
