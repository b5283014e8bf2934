"""Case 8, the leak test: a full delivery over smart HTTP with a token the server demands, into a
registry that demands a password (distribution with htpasswd), then failing deliveries (wrong registry
password, wrong token, unreachable remote) — and every place a secret could end up is searched for the
token and the passwords, raw and base64-encoded as they travel in Authorization headers: zero hits.

Leak paths searched (LEAK_PATHS): the run's events and log lines, metadata values, exception messages
(in events and raised to the caller), every file of the Dagster instance (sqlite and compute logs), the
process's stdout/stderr, every commit message and diff on the remote, the argv of every git child
process (a logging wrapper first on PATH), every file of the cache clone (its config included), and
the sensor's tick errors.
"""

from __future__ import annotations

import base64
import crypt  # noqa: deprecated in 3.11 but present; libxcrypt makes the bcrypt hash htpasswd needs
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster._serdes import serialize_value

from coelho_pipeline.dev import services
from pipeline_harness import git_push_sensor
from git_http import GitHTTPServer
from pipeline_harness import Pipeline, make_source_repo, settings_for

pytestmark = pytest.mark.docker

TOKEN = "tok-Zq81vLx0pQ7s"
WRONG_TOKEN = "tok-Wr0ngWr0ng99"
USER = "coelho-bot"
PASSWORD = "pw-Hq3mT5sKd2n"
WRONG_PASSWORD = "pw-Wr0ngPa55wd"
SECRETS = (TOKEN, WRONG_TOKEN, PASSWORD, WRONG_PASSWORD)

LEAK_PATHS = ("events and log lines", "metadata values", "exception messages", "instance files",
              "stdout/stderr", "commit messages and diffs", "git argv", "cache clone files", "sensor errors")


def _forms(secret: str) -> list[bytes]:
    """The secret as text and as the base64 of the Basic credentials it is sent in."""
    forms = [secret.encode()]
    for user in ("x-access-token", USER):
        forms.append(base64.b64encode(f"{user}:{secret}".encode()))
    return forms


def _hits(label: str, data: bytes | str) -> list[str]:
    blob = data.encode() if isinstance(data, str) else data
    return [f"{label}: {secret}" for secret in SECRETS if any(f in blob for f in _forms(secret))]


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[str]:
    """Distribution on 127.0.0.1 with htpasswd auth: pushes and v2 calls without the password get 401."""
    state = tmp_path / "registry"
    state.mkdir()
    (state / "htpasswd").write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    port = services.free_port()
    config = state / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {state / 'data'}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth:\n  htpasswd: {{realm: coelho, path: {state / 'htpasswd'}}}\n"
    )
    log = open(state / "registry.log", "ab")  # noqa: SIM115 - the child's for its lifetime
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    service = services.Service("registry with auth", process, state / "registry.log")
    try:
        services.wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401,
                          timeout=30, what=f"registry with auth on 127.0.0.1:{port}", service=service)
        assert requests.get(f"http://127.0.0.1:{port}/v2/", auth=(USER, PASSWORD), timeout=5).status_code == 200
        yield f"127.0.0.1:{port}"
    finally:
        service.stop()


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that appends its argv (one line, NUL-separated) to a file, then runs git."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git-argv.log"
    log.touch()
    real_git = shutil.which("git")
    assert real_git
    wrapper = bin_dir / "git"
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" >> '{log}'\necho >> '{log}'\nexec '{real_git}' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _files(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield str(path), path.read_bytes()


def test_no_secret_reaches_any_log_event_commit_argv_or_file(
        git_server, auth_registry: str, base_images, docker_host, argv_log: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    prefix = f"{auth_registry}/coelho"
    repo = make_source_repo(git_server)
    # Secrets reach Definitions as EnvVar, resolved from the environment when resources are built.
    monkeypatch.setenv("COELHO_GIT_TOKEN", TOKEN)
    monkeypatch.setenv("COELHO_REGISTRY_PASSWORD", PASSWORD)
    found: list[str] = []
    raised: list[str] = []
    with GitHTTPServer(git_server.base, TOKEN) as http, dg.instance_for_test() as instance:
        http_url = http.url(repo.bare.name)
        settings = settings_for(repo, prefix, tmp_path / "work", base_images, git_token=TOKEN,
                                registry_username=USER, registry_password=PASSWORD)
        pipeline = Pipeline(repo, replace(settings, git_url=http_url), instance)

        # 1. A full delivery through the token-guarded remote and the password-guarded registry.
        head = repo.head()
        ok = pipeline.deliver(head)
        assert ok.success, "the authenticated delivery failed"
        assert repo.log(1)[0][2] == f"Update image tags to {head} [skip ci]"
        assert http.requests and not any(TOKEN in r for r in http.requests), "fetched and pushed over HTTP"

        # 2. The sensor over the same remote (ls-remote and fetch with the token).
        git_resource = pipeline.defs.resources["git"]
        tick = git_push_sensor(dg.build_sensor_context(instance=instance, cursor=None, resources={"git": git_resource}))
        assert getattr(tick, "cursor", None) == repo.head()

        # 3. Failing deliveries, error messages being the classic leak: a wrong registry password ...
        change = repo.push({"apps/fastapi/main.py": "print('wrong registry password')\n"}, "FastAPI: bad password")
        monkeypatch.setenv("COELHO_REGISTRY_PASSWORD", WRONG_PASSWORD)
        bad_registry = pipeline.with_settings(registry_password=WRONG_PASSWORD, workdir=str(tmp_path / "work2"))
        assert not bad_registry.deliver(change).success
        monkeypatch.setenv("COELHO_REGISTRY_PASSWORD", PASSWORD)

        # ... a wrong token (the server answers 401) ...
        monkeypatch.setenv("COELHO_GIT_TOKEN", WRONG_TOKEN)
        bad_token = pipeline.with_settings(git_token=WRONG_TOKEN, workdir=str(tmp_path / "work3"))
        assert not bad_token.deliver(change).success
        try:
            git_push_sensor(dg.build_sensor_context(instance=instance, cursor=None,
                                                    resources={"git": bad_token.defs.resources["git"]}))
            raise AssertionError("the sensor accepted a refused token")
        except Exception as e:  # noqa: BLE001 - whatever it raises, its text is searched
            raised.append(f"{type(e).__name__}: {e}\n{e.__cause__!r}\n{e.__context__!r}")
        monkeypatch.setenv("COELHO_GIT_TOKEN", TOKEN)

        # ... and a remote that does not answer at all, still with the token configured.
        dead_url = f"http://127.0.0.1:{services.free_port()}/{repo.bare.name}"
        dead = Pipeline(repo, replace(pipeline.settings, git_url=dead_url, workdir=str(tmp_path / "work4")),
                        instance)
        assert not dead.deliver(change).success
        try:
            git_push_sensor(dg.build_sensor_context(instance=instance, cursor=None,
                                                    resources={"git": dead.defs.resources["git"]}))
            raise AssertionError("the sensor reached a dead remote")
        except Exception as e:  # noqa: BLE001
            raised.append(f"{type(e).__name__}: {e}\n{e.__cause__!r}\n{e.__context__!r}")

        # Every event of every run: log lines, metadata, step failures with their error chains.
        runs = instance.get_runs()
        assert len(runs) == 4
        assert sum(len(instance.all_logs(r.run_id)) for r in runs) > 50, "too few events to prove anything"
        for run in runs:
            for record in instance.all_logs(run.run_id):
                found += _hits(f"event {record.dagster_event_type or 'log'} of run {run.run_id}",
                               serialize_value(record))
                if record.user_message:
                    found += _hits("log line", record.user_message)
            found += _hits(f"run {run.run_id} tags/config", serialize_value(run))
        for error in raised:
            found += _hits("exception raised to the caller", error)
        # The instance's own files: sqlite event and run storage, compute logs, schedules.
        for name, data in _files(Path(instance.root_directory)):
            found += _hits(f"instance file {name}", data)

    # Every commit message and diff the remote holds.
    found += _hits("commits on the remote", services.git("log", "--all", "-p", "--format=%H%n%B", cwd=repo.bare))
    # Every git child's argv.
    argv = argv_log.read_bytes()
    assert b"push" in argv and b"ls-remote" in argv, "the git wrapper was not used"
    found += _hits("git argv", argv)
    # The cache clones (config, FETCH_HEAD, packed-refs, logs ...).
    for work in ("work", "work2", "work3", "work4"):
        if (tmp_path / work).exists():
            for name, data in _files(tmp_path / work):
                found += _hits(f"cache file {name}", data)
    config = (tmp_path / "work" / "git" / "repo.git" / "config").read_text()
    assert http_url in config and TOKEN not in config
    # What the pipeline printed.
    out, err = capfd.readouterr()
    found += _hits("stdout/stderr", out + err)

    assert _hits("control", "Authorization: Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode())
    assert not found, "secrets leaked:\n" + "\n".join(sorted(set(found)))


@pytest.mark.parametrize("form", ["query", "ssh-password"])
def test_a_credential_in_the_git_url_is_refused_before_it_reaches_git(
        git_server, argv_log: Path, tmp_path: Path, form: str) -> None:
    """A URL that carries the secret itself would put it in git's argv, the cache clone's config and every
    error message naming the remote: it must be refused at configuration, naming the variable only."""
    repo = make_source_repo(git_server)
    from coelho_pipeline.config import ConfigError, Settings

    with GitHTTPServer(git_server.base, TOKEN) as http:
        url = (f"{http.url(repo.bare.name)}?access_token={TOKEN}" if form == "query"
               else f"ssh://{USER}:{PASSWORD}@127.0.0.1:{services.free_port()}/{repo.bare.name}")
        env = {"COELHO_GIT_URL": url, "COELHO_WORKDIR": str(tmp_path / "work"),
               "COELHO_APPS": "fastapi,kafka_producers,sveltekit"}
        with pytest.raises(ConfigError, match="COELHO_GIT_URL") as refused:
            Settings.from_env(env)
        texts = [str(refused.value)]
    found = [hit for text in texts for hit in _hits("error message", text)]
    found += _hits("git argv", argv_log.read_bytes())
    if (tmp_path / "work").exists():
        for name, data in _files(tmp_path / "work"):
            found += _hits(f"cache file {name}", data)
    assert not found, "secrets leaked:\n" + "\n".join(sorted(set(found)))
