"""The git token (issue 7, case 8): never over plain http:// off loopback, never in argv, URLs,
messages or files on disk. Real git, the smart-HTTP server of tests/git_http.py, sockets on 127.0.0.1."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from coelho_pipeline.resources.git import GitError, GitRemote
from git_http import BlackHole, GitHTTPServer
from pipeline_harness import make_source_repo

TOKEN = "tok-" + "Zq9x" * 6
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture
def repo(git_server):
    repo = make_source_repo(git_server)
    subprocess.run(["git", "config", "http.receivepack", "true"], cwd=repo.bare, check=True)
    return repo


@pytest.mark.parametrize("url", [
    "http://git.example.com/coelho.git",
    "http://203.0.113.7:8080/coelho.git",
    "HTTP://Git.Example.COM/coelho.git",
])
def test_a_token_is_never_sent_over_plain_http_off_loopback(url: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Any request git would make goes to this loopback proxy instead of the network; it must see none.
    with BlackHole(reply=b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n") as proxy:
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, f"http://{proxy.address}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        remote = GitRemote(url=url, branch="master", cache_dir=tmp_path / "c", token=TOKEN)
        for call in (remote.ls_remote_head, remote.fetch, lambda: remote.push("0" * 40)):
            with pytest.raises(GitError) as info:
                call()
            message = str(info.value)
            assert "COELHO_GIT_URL" in message and "COELHO_GIT_TOKEN" in message, message
            assert "http://" in message and TOKEN not in message and BASIC not in message
            assert info.value.transient is False
        assert proxy.connections == 0, "git connected before the refusal"
    # Nothing was created on disk for a refused remote either.
    assert not (tmp_path / "c" / "repo.git").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_http_with_a_token_works_and_the_token_stays_out_of_argv_and_disk(
        host: str, repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIT_TRACE logs the argv of git and of every child it runs (git-remote-http, pack helpers).
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    with GitHTTPServer(repo.bare.parent, TOKEN) as server:
        url = server.url(repo.bare.name).replace("127.0.0.1", host)
        remote = GitRemote(url=url, branch="master", cache_dir=tmp_path / "cache", token=TOKEN)
        assert remote.ls_remote_head() == repo.head()
        tip = remote.fetch()
        sha = remote.commit_file(base_sha=tip, path="f.txt", text="pushed with a token\n", message="m\n")
        remote.push(sha)
        assert repo.head() == sha
    assert server.refused == 0  # every request carried the header: the token really was sent
    assert not any(TOKEN in line or BASIC in line for line in server.requests)

    logged = trace.read_text()
    assert "remote-http" in logged and "send-pack" in logged, "the trace did not see git's children"
    assert TOKEN not in logged and BASIC not in logged
    # No file of the cache (config, FETCH_HEAD, logs, packs) holds the token or its header.
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and BASIC.encode() not in data, path
    config = (tmp_path / "cache" / "repo.git" / "config").read_text()
    assert "extraheader" not in config.lower()


def test_a_token_is_not_sent_to_non_http_remotes(repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git:// and file remotes get no Authorization config at all (nothing to leak into a helper)."""
    trace = tmp_path / "trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    remote = GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "cache", token=TOKEN)
    assert remote.fetch() == repo.head()
    assert TOKEN not in trace.read_text()
