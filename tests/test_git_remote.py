"""GitRemote against a real bare repository served by git daemon."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from coelho_pipeline.resources.git import GitError, GitRemote, PushRejected
from pipeline_harness import make_source_repo


@pytest.fixture
def repo(git_server):
    return make_source_repo(git_server)


@pytest.fixture
def remote(repo, tmp_path: Path) -> GitRemote:
    return GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "cache")


def test_ls_remote_and_fetch_agree(repo, remote: GitRemote) -> None:
    assert remote.ls_remote_head() == repo.head() == remote.fetch()


def test_commit_file_changes_only_that_file_byte_for_byte(repo, remote: GitRemote) -> None:
    tip = remote.fetch()
    text = "a: 1\r\nb: 'x'  # crlf and quotes stay\r\n"
    sha = remote.commit_file(base_sha=tip, path="k3d/helm/values.yaml", text=text, message="m\n\nSource-Commit: abc\n")
    remote.push(sha)
    assert repo.head() == sha
    raw = subprocess.run(["git", "show", f"{sha}:k3d/helm/values.yaml"], cwd=repo.bare, capture_output=True).stdout
    assert raw == text.encode()
    names = subprocess.run(["git", "diff", "--name-only", tip, sha], cwd=repo.bare, capture_output=True,
                           text=True).stdout.split()
    assert names == ["k3d/helm/values.yaml"]


def test_push_onto_a_moved_branch_is_rejected_and_leaves_the_remote_alone(repo, remote: GitRemote) -> None:
    tip = remote.fetch()
    moved = repo.push({"README.md": "someone else\n"}, "concurrent change")
    sha = remote.commit_file(base_sha=tip, path="x.txt", text="mine\n", message="mine")
    with pytest.raises(PushRejected, match="moved"):
        remote.push(sha)
    assert repo.head() == moved


def test_find_manifest_commit_only_trusts_the_pipeline_author(repo, remote: GitRemote) -> None:
    repo.push({"README.md": "fake\n"}, "Update image tags [skip ci]\n\nSource-Commit: abc123")
    remote.fetch()
    assert remote.find_manifest_commit("abc123") is None
    tip = remote.fetch()
    sha = remote.commit_file(base_sha=tip, path="f", text="x\n", message="m\n\nSource-Commit: abc123\n")
    remote.push(sha)
    assert remote.find_manifest_commit("abc123") == sha


def test_archive_is_a_build_context(repo, remote: GitRemote) -> None:
    import io
    import tarfile
    tip = remote.fetch()
    names = tarfile.open(fileobj=io.BytesIO(remote.archive(tip, "apps/fastapi"))).getnames()
    assert "Dockerfile" in names
    with pytest.raises(GitError, match="apps/nope"):
        remote.archive(tip, "apps/nope")


def test_token_never_appears_in_errors(tmp_path: Path) -> None:
    remote = GitRemote(url="http://127.0.0.1:1/x.git", branch="master", cache_dir=tmp_path / "c", token="tok-SECRET")
    with pytest.raises(GitError) as info:
        remote.fetch()
    assert "tok-SECRET" not in str(info.value)
    assert "127.0.0.1:1/x.git" in str(info.value)


def test_a_token_authenticates_over_http_and_never_travels_in_urls(repo, tmp_path: Path) -> None:
    from git_http import GitHTTPServer

    token = "tok-" + "s3cr3t" * 4
    subprocess.run(["git", "config", "http.receivepack", "true"], cwd=repo.bare, check=True)
    with GitHTTPServer(repo.bare.parent, token) as server:
        url = server.url(repo.bare.name)
        anonymous = GitRemote(url=url, branch="master", cache_dir=tmp_path / "anon")
        with pytest.raises(GitError) as refused:
            anonymous.ls_remote_head()
        assert "127.0.0.1" in str(refused.value)

        remote = GitRemote(url=url, branch="master", cache_dir=tmp_path / "authed", token=token)
        assert remote.ls_remote_head() == repo.head()  # the sensor's call
        tip = remote.fetch()
        sha = remote.commit_file(base_sha=tip, path="f.txt", text="pushed with a token\n", message="m\n")
        remote.push(sha)
        assert repo.head() == sha

    assert server.refused >= 1 and len(server.requests) > server.refused
    assert not any(token in line for line in server.requests)
    config = (tmp_path / "authed" / "repo.git" / "config").read_text()
    assert token not in config and "extraheader" not in config.lower()


def test_with_several_environments_on_the_branch_each_finds_only_its_own_commits(repo, remote: GitRemote,
                                                                                   tmp_path: Path) -> None:
    dev = replace(remote, values_file="k3d/helm/values-dev.yaml")
    prod = GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "prod-cache",
                     values_file="k3d/helm/values-prod.yaml")
    source = repo.head()
    tip = remote.fetch()
    # Written before the branch carried a second environment: no Values-File trailer; its file says whose.
    before = remote.commit_file(base_sha=tip, path="k3d/helm/values-dev.yaml", text="dev: 1\n",
                                message=f"Update image tags to {source} [skip ci]\n\nSource-Commit: {source}\n")
    remote.push(before)
    remote.fetch()
    promoted = remote.commit_file(
        base_sha=before, path="k3d/helm/values-prod.yaml", text="prod: 1\n",
        message=f"Promote {source} from dev to prod [skip ci]\n\nSource-Commit: {source}\nPromoted-From: dev\n"
                "Values-File: k3d/helm/values-prod.yaml\n")
    remote.push(promoted)
    for r in (dev, prod, remote):
        r.fetch()
    assert dev.find_manifest_commit(source) == before
    assert prod.find_manifest_commit(source) == promoted
    assert remote.find_manifest_commit(source) == promoted  # one environment on the branch: any of ours
    assert dev.last_delivered_source() == prod.last_delivered_source() == source
    other = GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "qa-cache",
                      values_file="k3d/helm/values-qa.yaml")
    other.fetch()
    assert other.find_manifest_commit(source) is None and other.last_delivered_source() is None


def test_missing_paths_and_changed_under_answer_for_many_paths_in_one_call(repo, remote: GitRemote) -> None:
    base = repo.push({"apps/a/Dockerfile": "FROM scratch\n", "apps/ab/Dockerfile": "FROM scratch\n",
                      "apps/b/x": "1\n"}, "three contexts")
    new = repo.push({"apps/ab/f": "2\n", "apps/b/x": "2\n"}, "two of them changed")
    remote.fetch()
    assert remote.missing_paths(new, ["apps/a/Dockerfile", "apps/b/Dockerfile", "apps/ab/Dockerfile"]) == [
        "apps/b/Dockerfile"]
    # "apps/a" is not a prefix of "apps/ab/f": whole path components only.
    assert remote.changed_under(base, new, ["apps/a", "apps/ab", "apps/b/"]) == {
        "apps/a": [], "apps/ab": ["apps/ab/f"], "apps/b/": ["apps/b/x"]}
    assert remote.changed_paths(base, new, "apps/ab") == ["apps/ab/f"]
