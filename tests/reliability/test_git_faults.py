"""GitRemote against hung, refusing and wrongly answering remotes, and a cache clone a killed git left
locks in (issue 7, cases 6 and 7). Real git, real sockets on 127.0.0.1; nothing of ours is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.resources.git import GitError, GitRemote
from git_http import BlackHole, CannedHTTP, GitHTTPServer
from pipeline_harness import make_source_repo


@pytest.fixture
def repo(git_server):
    return make_source_repo(git_server)


@pytest.fixture
def slim_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH as in a slim image: git and nothing else (no ps, no pgrep)."""
    bin_dir = tmp_path / "slim-bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("ps") is None and shutil.which("pgrep") is None
    return bin_dir


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (process group, argv) of every live process, read from /proc (no ps needed)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is dead already; only its parent's wait is missing
            continue
        found[int(entry)] = (int(fields[2]), argv)
    return found


class _Watch:
    """Records, while a git command runs, the process groups of every process naming ``marker``."""

    def __init__(self, marker: str, lock: Path | None = None) -> None:
        self.marker = marker
        self.lock = str(lock) if lock else None
        self.groups: set[int] = set()
        self.argvs: set[str] = set()
        self.lock_holders: set[str] = set()  # argv of those that have the cache lock open
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, (pgid, argv) in _processes().items():
                if self.marker in argv:
                    self.groups.add(pgid)
                    self.argvs.add(argv)
                    if self.lock and self.lock in _open_files(pid):
                        self.lock_holders.add(argv)
            time.sleep(0.05)


def _open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return set()


def _survivors(groups: set[int]) -> list[str]:
    return [f"{pid}: {argv}" for pid, (pgid, argv) in _processes().items() if pgid in groups]


@pytest.mark.timeout(60)  # e1ad17e: 300 s hard-coded, and GitPython's kill needs ps
@pytest.mark.parametrize("call", ["fetch", "ls_remote_head"])
def test_a_hung_http_remote_times_out_and_its_whole_process_group_dies_without_ps(
        call: str, tmp_path: Path, slim_path: Path) -> None:
    with BlackHole() as hole:
        url = f"http://{hole.address}/coelho.git"
        remote = GitRemote(url=url, branch="master", cache_dir=tmp_path / "cache", network_timeout=3)
        started = time.monotonic()
        with _Watch(hole.address, tmp_path / "cache" / ".lock") as watch, pytest.raises(GitError) as info:
            getattr(remote, call)()
        elapsed = time.monotonic() - started
        assert hole.connections >= 1  # git really reached the hung server
    assert elapsed < 15, f"{call} took {elapsed:.1f}s with a 3s timeout"
    assert info.value.transient is True and info.value.timed_out is True
    assert "timed out after 3s" in str(info.value) and url in str(info.value)
    # git spawns git-remote-http for http:// remotes: that child must die with it.
    assert any("remote-http" in argv for argv in watch.argvs), watch.argvs
    if call == "fetch":
        # The helper holds the cache lock too: while any git of ours lives, no one else takes the clone.
        assert any("remote-http" in argv for argv in watch.lock_holders), watch.lock_holders
    time.sleep(0.2)
    assert not _survivors(watch.groups), _survivors(watch.groups)


@pytest.mark.timeout(60)
def test_a_push_to_a_hung_remote_times_out_and_leaves_the_cache_usable(repo, tmp_path: Path,
                                                                         slim_path: Path) -> None:
    cache = tmp_path / "cache"
    good = GitRemote(url=repo.url, branch="master", cache_dir=cache)
    tip = good.fetch()
    with BlackHole() as hole:
        hung = GitRemote(url=f"http://{hole.address}/coelho.git", branch="master", cache_dir=cache,
                         network_timeout=2)
        sha = hung.commit_file(base_sha=tip, path="f.txt", text="x\n", message="m\n")
        started = time.monotonic()
        with _Watch(hole.address) as watch, pytest.raises(GitError) as info:
            hung.push(sha)
        assert time.monotonic() - started < 12
    assert info.value.transient is True
    assert repo.head() == tip  # nothing half-pushed
    time.sleep(0.2)
    assert not _survivors(watch.groups)
    # The same cache clone, back on the real remote: fetch, commit and push all work.
    tip = good.fetch()
    sha = good.commit_file(base_sha=tip, path="f.txt", text="after the hang\n", message="m\n")
    good.push(sha)
    assert repo.head() == sha


@pytest.mark.timeout(60)
def test_a_hung_git_daemon_times_out(tmp_path: Path, slim_path: Path) -> None:
    with BlackHole() as hole:
        remote = GitRemote(url=f"git://{hole.address}/coelho.git", branch="master", cache_dir=tmp_path / "c",
                           network_timeout=2)
        started = time.monotonic()
        with pytest.raises(GitError) as info:
            remote.fetch()
    assert time.monotonic() - started < 12
    assert info.value.transient is True


def test_network_timeout_is_configurable_on_the_resource(tmp_path: Path) -> None:
    from coelho_pipeline.resources.git import NETWORK_TIMEOUT_SECONDS, GitResource

    assert NETWORK_TIMEOUT_SECONDS == 300
    resource = GitResource(url="git://127.0.0.1:1/x.git", cache_dir=str(tmp_path), network_timeout=7)
    assert resource.remote().network_timeout == 7
    assert GitRemote(url="x", branch="m", cache_dir=tmp_path).network_timeout == 300


STALE_LOCKS = ["index.lock", "shallow.lock", "refs/remotes/origin/master.lock", "packed-refs.lock",
               "config.lock", "refs/heads/master.lock", "HEAD.lock", "objects/info/commit-graph.lock"]


def test_stale_locks_left_by_a_killed_git_are_recovered_under_the_cache_lock(repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    remote = GitRemote(url=repo.url, branch="master", cache_dir=cache)
    remote.fetch()
    git_dir = cache / "repo.git"
    for name in STALE_LOCKS:
        (git_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (git_dir / name).write_text("left by a killed git\n")
    moved = repo.push({"README.md": "new upstream commit\n"}, "upstream moves")

    assert remote.fetch() == moved
    sha = remote.commit_file(base_sha=moved, path="k3d/helm/values.yaml", text="a: 1\n", message="m\n")
    remote.push(sha)
    assert repo.head() == sha
    assert not list(git_dir.rglob("*.lock"))
    assert (cache / ".lock").exists()  # the flock file itself is not a git lock and stays


def test_a_stale_lock_from_a_git_killed_by_the_timeout_does_not_wedge_the_next_fetch(repo, tmp_path: Path) -> None:
    """The real thing: a fetch killed mid-flight (SIGKILL to its group), then the next one works."""
    cache = tmp_path / "cache"
    remote = GitRemote(url=repo.url, branch="master", cache_dir=cache)
    remote.fetch()
    git_dir = cache / "repo.git"
    # What git does while it updates a ref: holds <ref>.lock; a SIGKILL there leaves it behind.
    lock = git_dir / "refs/remotes/origin/master.lock"
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    lock.write_text(f"{proc.pid}\n")
    proc.kill()
    proc.wait()
    moved = repo.push({"README.md": "again\n"}, "upstream moves again")
    assert remote.fetch() == moved
    assert not lock.exists()


@pytest.mark.parametrize("status,transient", [
    ("503 Service Unavailable", True), ("502 Bad Gateway", True), ("429 Too Many Requests", True),
    ("404 Not Found", False), ("403 Forbidden", False),
])
def test_http_answers_are_classified(status: str, transient: bool, tmp_path: Path) -> None:
    with CannedHTTP(status, body=b"no\n") as server:
        url = f"http://{server.address}/coelho.git"
        remote = GitRemote(url=url, branch="master", cache_dir=tmp_path / "c", network_timeout=20)
        with pytest.raises(GitError) as info:
            remote.fetch()
    assert info.value.transient is transient, str(info.value)
    assert url in str(info.value)


def test_refused_connections_are_transient_and_missing_repos_terminal(repo, git_server, tmp_path: Path) -> None:
    port = services.free_port()  # nothing listens there
    for url in (f"http://127.0.0.1:{port}/x.git", f"git://127.0.0.1:{port}/x.git"):
        with pytest.raises(GitError) as info:
            GitRemote(url=url, branch="master", cache_dir=tmp_path / "refused", network_timeout=20).fetch()
        assert info.value.transient is True, str(info.value)
    with pytest.raises(GitError) as info:
        GitRemote(url=git_server.url("does-not-exist"), branch="master", cache_dir=tmp_path / "missing",
                  network_timeout=20).fetch()
    assert info.value.transient is False, str(info.value)
    assert "does-not-exist" in str(info.value)


def test_a_refused_token_is_terminal(repo, tmp_path: Path) -> None:
    subprocess.run(["git", "config", "http.receivepack", "true"], cwd=repo.bare, check=True)
    with GitHTTPServer(repo.bare.parent, "the-right-token") as server:
        remote = GitRemote(url=server.url(repo.bare.name), branch="master", cache_dir=tmp_path / "c",
                           token="a-wrong-token", network_timeout=20)
        with pytest.raises(GitError) as info:
            remote.fetch()
    assert info.value.transient is False, str(info.value)
    assert "a-wrong-token" not in str(info.value)


def test_a_server_answering_garbage_fails_within_the_timeout(tmp_path: Path) -> None:
    with BlackHole(reply=b"SSH-2.0-not-http\r\n") as hole:
        remote = GitRemote(url=f"http://{hole.address}/coelho.git", branch="master", cache_dir=tmp_path / "c",
                           network_timeout=10)
        started = time.monotonic()
        with pytest.raises(GitError) as info:
            remote.fetch()
    assert time.monotonic() - started < 10
    assert hole.address in str(info.value)


@pytest.mark.timeout(60)  # e1ad17e waits for the cache lock forever
def test_a_cache_lock_held_too_long_is_a_clear_transient_error(repo, tmp_path: Path) -> None:
    import fcntl

    cache = tmp_path / "cache"
    remote = GitRemote(url=repo.url, branch="master", cache_dir=cache, lock_timeout=1)
    remote.fetch()
    with open(cache / ".lock", "w") as held:  # what a git orphaned by a killed worker would keep
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(GitError) as info:
            remote.has_commit(repo.head())
        assert time.monotonic() - started < 10
    assert str(cache / ".lock") in str(info.value) and info.value.transient is True
    assert remote.has_commit(repo.head())  # released: works again
