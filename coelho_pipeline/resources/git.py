"""Git access for the pipeline: a bare cache clone of the watched remote, driven through GitPython.

Commits are written with plumbing (hash-object, a private index, commit-tree) on top of a fetched tip,
so no work tree is ever checked out and several processes can share the cache clone under a file lock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import git
from git.exc import GitCommandError
from pydantic import PrivateAttr

from coelho_pipeline.domain import CommitInfo


class GitError(Exception):
    """A Git operation failed; the message names the remote and the operation, never a credential."""


class PushRejected(GitError):
    """The remote refused the push because the branch moved (non-fast-forward): refetch and retry."""


NETWORK_TIMEOUT_SECONDS = 300

# What GitHub, GitLab, Gitea and git-daemon print when the branch moved under us.
_NON_FAST_FORWARD_MARKERS = (
    "non-fast-forward",
    "fetch first",
    "incorrect old value provided",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
)


@dataclass(frozen=True)
class GitRemote:
    """The watched branch of one remote, cached in a bare clone under ``cache_dir``."""

    url: str
    branch: str
    cache_dir: Path
    token: str | None = None
    author_name: str = "coelho-pipeline"
    author_email: str = "pipeline@coelho-realtime.local"

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    # -- reads ---------------------------------------------------------------------------------

    def ls_remote_head(self) -> str | None:
        """SHA of the branch on the remote, without fetching (cheap enough for every sensor tick)."""
        out = self._run_detached("ls-remote", self.url, f"refs/heads/{self.branch}")
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{self.branch}":
                return sha
        return None

    def fetch(self) -> str:
        """Brings the branch into the cache clone and returns its tip."""
        with self._repo() as repo:
            self._git(repo, "fetch", "--quiet", "--prune", "origin",
                      f"+refs/heads/{self.branch}:{self.tracking_ref}", what="fetch")
            return repo.git.rev_parse(self.tracking_ref)

    def ensure_commit(self, sha: str) -> None:
        """Fetches if ``sha`` is not known yet; fails clearly if the remote does not have it."""
        with self._repo() as repo:
            if _has_commit(repo, sha):
                return
        self.fetch()
        with self._repo() as repo:
            if not _has_commit(repo, sha):
                raise GitError(f"commit {sha} is not on {self.branch} of {self.display_url}")

    def has_commit(self, sha: str) -> bool:
        with self._repo() as repo:
            return _has_commit(repo, sha)

    def commit_info(self, sha: str) -> CommitInfo:
        with self._repo() as repo:
            return _commit_info(repo.commit(sha))

    def commits_between(self, old: str | None, new: str, *, limit: int = 200) -> list[CommitInfo]:
        """Commits reachable from ``new`` but not from ``old``, newest first (just ``new`` without ``old``).

        --topo-order: the newest is the head itself, whatever the commit dates say. ``limit`` bounds
        a tick after a long pause; the newest commit is always first.
        """
        with self._repo() as repo:
            if old and _has_commit(repo, old):
                return [_commit_info(c) for c in repo.iter_commits(f"{old}..{new}", topo_order=True,
                                                                     max_count=limit)]
            return [_commit_info(repo.commit(new))]

    def is_ancestor(self, older: str, newer: str) -> bool:
        with self._repo() as repo:
            try:
                repo.git.merge_base("--is-ancestor", older, newer)
                return True
            except GitCommandError:
                return False

    def read_file(self, sha: str, path: str) -> str | None:
        """Text of ``path`` at ``sha``, or None when the file does not exist there."""
        with self._repo() as repo:
            try:
                blob = repo.commit(sha).tree / path
            except KeyError:
                return None
            # newline="" semantics: keep CRLF and every other byte as stored.
            return blob.data_stream.read().decode("utf-8")

    def path_exists(self, sha: str, path: str) -> bool:
        with self._repo() as repo:
            try:
                repo.commit(sha).tree / path
                return True
            except KeyError:
                return False

    def changed_paths(self, old: str, new: str, path: str) -> list[str]:
        """Files under ``path`` that differ between two commits."""
        with self._repo() as repo:
            out = repo.git.diff("--name-only", old, new, "--", path)
        return [line for line in out.splitlines() if line]

    def archive(self, sha: str, path: str) -> bytes:
        """Tar of the tree at ``sha:path`` with paths relative to it: a Docker build context."""
        with self._repo() as repo:
            if not _tree_exists(repo, sha, path):
                raise GitError(f"{path}/ does not exist at commit {sha}")
            buf = io.BytesIO()
            repo.archive(buf, treeish=f"{sha}:{path}", format="tar")
        data = buf.getvalue()
        tarfile.open(fileobj=io.BytesIO(data)).getmembers()  # fail here, not in the build, on a bad archive
        return data

    def find_manifest_commit(self, source_sha: str, *, limit: int = 500) -> str | None:
        """The pipeline's commit for ``source_sha`` on the branch, found by its Source-Commit trailer."""
        with self._repo() as repo:
            out = repo.git.log(
                f"-n{limit}", "--format=%H %ae", f"--grep=^Source-Commit: {source_sha}$", self.tracking_ref
            )
        for line in out.splitlines():
            sha, _, email = line.partition(" ")
            if email == self.author_email:
                return sha
        return None

    # -- writes --------------------------------------------------------------------------------

    def commit_file(self, *, base_sha: str, path: str, text: str, message: str) -> str:
        """Creates (without pushing) a commit on ``base_sha`` that sets ``path`` to ``text``."""
        with self._repo() as repo, tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            content, message_file, index_file = Path(tmp, "content"), Path(tmp, "message"), Path(tmp, "index")
            content.write_bytes(text.encode("utf-8"))
            message_file.write_bytes(message.encode("utf-8"))
            # --no-filters: the blob must hold exactly the bytes the values editor produced.
            blob = self._git(repo, "hash-object", "-w", "--no-filters", str(content), what="hash-object")
            mode = "100644"
            with contextlib.suppress(KeyError):
                mode = oct((repo.commit(base_sha).tree / path).mode)[2:]
            ident = {
                "GIT_INDEX_FILE": str(index_file),
                "GIT_AUTHOR_NAME": self.author_name, "GIT_AUTHOR_EMAIL": self.author_email,
                "GIT_COMMITTER_NAME": self.author_name, "GIT_COMMITTER_EMAIL": self.author_email,
            }
            with repo.git.custom_environment(**ident):
                repo.git.read_tree(base_sha)
                repo.git.update_index("--add", "--cacheinfo", f"{mode},{blob},{path}")
                tree = repo.git.write_tree()
                return self._git(repo, "commit-tree", tree, "-p", base_sha, "-F", str(message_file),
                                 what="commit-tree")

    def push(self, sha: str) -> None:
        """Fast-forwards the remote branch to ``sha``; raises PushRejected when the branch moved."""
        with self._repo() as repo:
            try:
                self._git(repo, "push", "--porcelain", "origin", f"{sha}:refs/heads/{self.branch}", what="push",
                          translate=False)
            except GitCommandError as e:
                text = _scrub(f"{e.stdout}\n{e.stderr}", self.token)
                if any(marker in text for marker in _NON_FAST_FORWARD_MARKERS):
                    raise PushRejected(f"push to {self.branch} of {self.display_url} was rejected: the branch "
                                       f"moved ({_last_line(text)})") from None
                raise GitError(f"push to {self.branch} of {self.display_url} failed: {text.strip()}") from None
            self._git(repo, "update-ref", self.tracking_ref, sha, what="update-ref")

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The URL without any userinfo, for messages."""
        parts = urlsplit(self.url)
        if parts.username or parts.password:
            return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        return self.url

    def _auth_env(self) -> dict[str, str]:
        """An Authorization header passed through git's environment config, never through the URL or argv."""
        if not self.token or not self.url.startswith(("http://", "https://")):
            return {}
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            "GIT_TERMINAL_PROMPT": "0",
        }

    @contextlib.contextmanager
    def _repo(self) -> Iterator[git.Repo]:
        """The bare cache clone, created on first use, held under an exclusive file lock."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.cache_dir / "repo.git"
            if not (path / "HEAD").exists():
                repo = git.Repo.init(path, bare=True)
                repo.create_remote("origin", self.url)
            repo = git.Repo(path)
            if repo.remote("origin").url != self.url:
                repo.remote("origin").set_url(self.url)
            try:
                with repo.git.custom_environment(GIT_TERMINAL_PROMPT="0"):
                    yield repo
            finally:
                repo.close()

    def _git(self, repo: git.Repo, *args: str, what: str, translate: bool = True) -> str:
        try:
            with repo.git.custom_environment(**self._auth_env()):
                # A hung remote must not hold the cache clone's lock (and the sensor) forever.
                return repo.git.execute(["git", *args], kill_after_timeout=NETWORK_TIMEOUT_SECONDS)
        except GitCommandError as e:
            if not translate:
                raise
            raise GitError(f"git {what} on {self.display_url} failed: "
                           f"{_scrub(str(e.stderr or e), self.token).strip()}") from None

    def _run_detached(self, *args: str) -> str:
        """A git command that needs no repository (ls-remote)."""
        runner = git.Git()
        try:
            with runner.custom_environment(**{"GIT_TERMINAL_PROMPT": "0", **self._auth_env()}):
                return runner.execute(["git", *args], kill_after_timeout=NETWORK_TIMEOUT_SECONDS)
        except GitCommandError as e:
            raise GitError(f"git {args[0]} on {self.display_url} failed: "
                           f"{_scrub(str(e.stderr or e), self.token).strip()}") from None


def _commit_info(c: git.Commit) -> CommitInfo:
    return CommitInfo(
        sha=c.hexsha,
        author_name=c.author.name or "",
        author_email=c.author.email or "",
        message=c.message if isinstance(c.message, str) else c.message.decode(),
        committed_at=c.committed_datetime,
    )


def _has_commit(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
        return True
    except GitCommandError:
        return False


def _tree_exists(repo: git.Repo, sha: str, path: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}:{path}")
        return True
    except GitCommandError:
        return False


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
        text = text.replace(base64.b64encode(f"x-access-token:{secret}".encode()).decode(), "***")
    return text


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class GitResource(dg.ConfigurableResource):
    """The watched source/manifest repository (one branch of one remote)."""

    url: str
    branch: str = "master"
    token: str | None = None
    cache_dir: str
    author_name: str = "coelho-pipeline"
    author_email: str = "pipeline@coelho-realtime.local"

    _remote: GitRemote | None = PrivateAttr(default=None)

    def remote(self) -> GitRemote:
        if self._remote is None:
            self._remote = GitRemote(
                url=self.url, branch=self.branch, cache_dir=Path(self.cache_dir), token=self.token,
                author_name=self.author_name, author_email=self.author_email,
            )
        return self._remote
