"""GitRemote.read_file on files the pipeline must refuse clearly (issue 7, case 9): not UTF-8, too big,
not a file. Through a real git daemon remote."""

from __future__ import annotations

from pathlib import Path

import pytest

from coelho_pipeline.dev import services
from coelho_pipeline.resources.git import GitError, GitRemote
from pipeline_harness import make_source_repo

VALUES = "k3d/helm/values.yaml"


@pytest.fixture
def repo(git_server):
    return make_source_repo(git_server)


@pytest.fixture
def remote(repo, tmp_path: Path) -> GitRemote:
    return GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "cache")


def _push_bytes(repo, path: str, data: bytes) -> str:
    target = repo.clone / path
    services.git("pull", "-q", "--ff-only", "origin", repo.branch, cwd=repo.clone)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    services.git("add", "-A", cwd=repo.clone)
    services.git("commit", "-q", "-m", f"raw bytes in {path}", cwd=repo.clone,
                 env={"GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@x", "GIT_COMMITTER_NAME": "dev",
                      "GIT_COMMITTER_EMAIL": "dev@x"})
    return repo.publish()


LATIN1 = b"fastapi:\n  image:\n    tag: caf\xe9\n"  # from an old editor
UTF16 = b"\xff\xfef\x00a\x00"  # with its BOM
TRUNCATED = b"a: '" + "\u00e9".encode() + b"'\nb: \xc3\n"  # valid UTF-8, then a cut sequence


@pytest.mark.parametrize("data,offset", [
    (LATIN1, LATIN1.index(b"\xe9")), (UTF16, 0), (TRUNCATED, TRUNCATED.rindex(b"\xc3")),
])
def test_a_values_file_that_is_not_utf8_is_refused_naming_file_commit_and_offset(
        data: bytes, offset: int, repo, remote: GitRemote) -> None:
    sha = _push_bytes(repo, VALUES, data)
    remote.fetch()
    with pytest.raises(GitError) as info:
        remote.read_file(sha, VALUES)
    message = str(info.value)
    assert VALUES in message and sha in message and f"offset {offset}" in message, message
    assert "UTF-8" in message
    assert info.value.transient is False


def test_max_bytes_refuses_a_big_blob_from_its_size_alone(repo, remote: GitRemote, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    big = b"# padding\n" * 200_000  # 2 MB
    sha = _push_bytes(repo, VALUES, big)
    remote.fetch()
    trace = tmp_path / "trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    with pytest.raises(GitError) as info:
        remote.read_file(sha, VALUES, max_bytes=1_000_000)
    message = str(info.value)
    assert VALUES in message and sha in message and str(len(big)) in message and "1000000" in message, message
    assert info.value.transient is False
    logged = trace.read_text()
    assert "cat-file -s" in logged
    assert "cat-file blob" not in logged and "--batch" not in logged, "the blob was read anyway"
    monkeypatch.delenv("GIT_TRACE")
    # At or under the limit it reads as before; without a limit as before.
    assert remote.read_file(sha, VALUES, max_bytes=len(big)) == big.decode()
    assert remote.read_file(sha, VALUES) == big.decode()


def test_read_file_keeps_bytes_and_says_none_for_a_missing_file(repo, remote: GitRemote) -> None:
    text = "a: 1\r\nb: 'ü'  # crlf, quotes and non-ASCII stay\r\n\r\n"
    sha = _push_bytes(repo, VALUES, text.encode())
    remote.fetch()
    assert remote.read_file(sha, VALUES) == text
    assert remote.read_file(sha, "k3d/helm/nope.yaml") is None
    assert remote.read_file(sha, "nope/values.yaml", max_bytes=10) is None
    with pytest.raises(GitError, match="k3d/helm .*not a file"):
        remote.read_file(sha, "k3d/helm")
