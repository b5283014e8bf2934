"""Git access for the pipeline: a bare cache clone of the watched remote, driven through GitPython.

Commits are written with plumbing (hash-object, a private index, commit-tree) on top of a fetched tip,
so no work tree is ever checked out and several processes can share the cache clone under a file lock.

Every command that talks to the remote or writes into the cache clone runs through ``_run``: its own
process group (killed whole on timeout, without ``ps``), the cache lock's file descriptor inherited,
the token in git's environment only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import logging
import os
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import git
from git.exc import GitCommandError
from pydantic import PrivateAttr

from coelho_pipeline.domain import CommitInfo
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.loopback import is_loopback

log = logging.getLogger(__name__)


class GitError(PipelineError):
    """A Git operation failed; the message names the remote and the operation, never a credential.

    ``output`` is git's scrubbed stdout+stderr (for callers that look for markers), ``timed_out`` whether
    the command was killed by the network timeout.
    """

    def __init__(self, message: str, *, transient: bool | None = None, output: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.output = output
        self.timed_out = timed_out


class PushRejected(GitError):
    """The remote refused the push because the branch moved (non-fast-forward): refetch and retry."""

    transient = True


NETWORK_TIMEOUT_SECONDS = 300.0
# The trailer that says which values file a pipeline commit writes (see GitRemote.values_file).
VALUES_FILE_TRAILER = "Values-File"

# What GitHub, GitLab, Gitea and git-daemon print when the branch moved under us.
_NON_FAST_FORWARD_MARKERS = (
    "non-fast-forward",
    "fetch first",
    "incorrect old value provided",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
)

# stderr of git (and curl/ssh under it) when another attempt may succeed: the remote or the network
# is down or overloaded, not the request wrong. Anything else (auth refused, 4xx, missing repo) is terminal.
_TRANSIENT_MARKERS = (
    "could not resolve host",
    "could not resolve hostname",
    "temporary failure in name resolution",
    "connection refused",
    "failed to connect",
    "couldn't connect to server",
    "unable to connect",
    "connection reset",
    "connection timed out",
    "timed out",
    "operation too slow",
    "network is unreachable",
    "no route to host",
    "early eof",
    "the remote end hung up unexpectedly",
    "unexpected disconnect",
    "rpc failed",
    "http/2 stream",
    "gnutls_handshake() failed",
    "ssl_connect",
    "the requested url returned error: 5",
    "the requested url returned error: 429",
    "the requested url returned error: 408",
    "service unavailable",
    "internal server error",
    "bad gateway",
)



def classify_git_stderr(text: str) -> bool:
    """True when ``text`` (git's stderr) describes a failure another attempt may not see."""
    lowered = text.lower()
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


@dataclass(frozen=True)
class _Clone:
    """The cache clone while its exclusive lock is held; ``lock_fd`` is handed to every writing git."""

    repo: git.Repo
    lock_fd: int


@dataclass(frozen=True)
class GitRemote:
    """The watched branch of one remote, cached in a bare clone under ``cache_dir``."""

    url: str
    branch: str
    cache_dir: Path
    token: str | None = field(default=None, repr=False)
    author_name: str = "coelho-pipeline"
    author_email: str = "pipeline@coelho-realtime.local"
    # Seconds one network git command (fetch, push, ls-remote) may take before its process group is killed.
    network_timeout: float = NETWORK_TIMEOUT_SECONDS
    # Seconds to wait for the cache clone's lock; None: twice the network timeout plus 30 s.
    lock_timeout: float | None = None
    # The values file whose deliveries this remote looks for, when the branch carries the commits of
    # several environments (each writes its own file): their commits carry a Values-File trailer.
    # "" (one environment on the branch): any of the pipeline's commits is this environment's.
    values_file: str = ""

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    # -- reads ---------------------------------------------------------------------------------

    def ls_remote_head(self) -> str | None:
        """SHA of the branch on the remote, without fetching (cheap enough for every sensor tick)."""
        out = self._run(["ls-remote", self.url, f"refs/heads/{self.branch}"], what="ls-remote",
                        timeout=self.network_timeout, network=True)
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{self.branch}":
                return sha
        return None

    def fetch(self) -> str:
        """Brings the branch into the cache clone and returns its tip."""
        self._check_transport()
        with self._repo() as clone:
            self._run(["fetch", "--quiet", "--prune", "origin", f"+refs/heads/{self.branch}:{self.tracking_ref}"],
                      what="fetch", clone=clone, timeout=self.network_timeout, network=True)
            return clone.repo.git.rev_parse(self.tracking_ref)

    def ensure_commit(self, sha: str) -> None:
        """Fetches if ``sha`` is not known yet; fails clearly if the remote does not have it."""
        with self._repo() as clone:
            if _has_commit(clone.repo, sha):
                return
        self.fetch()
        with self._repo() as clone:
            if not _has_commit(clone.repo, sha):
                raise GitError(f"commit {sha} is not on {self.branch} of {self.display_url}")

    def has_commit(self, sha: str) -> bool:
        with self._repo() as clone:
            return _has_commit(clone.repo, sha)

    def commit_info(self, sha: str) -> CommitInfo:
        with self._repo() as clone:
            return _commit_info(clone.repo.commit(sha))

    def commits_between(self, old: str | None, new: str, *, limit: int = 200) -> list[CommitInfo]:
        """Commits reachable from ``new`` but not from ``old``, newest first (just ``new`` without ``old``).

        --topo-order: the newest is the head itself, whatever the commit dates say. ``limit`` bounds
        a tick after a long pause; the newest commit is always first.
        """
        with self._repo() as clone:
            repo = clone.repo
            if old and _has_commit(repo, old):
                return [_commit_info(c) for c in repo.iter_commits(f"{old}..{new}", topo_order=True,
                                                                     max_count=limit)]
            return [_commit_info(repo.commit(new))]

    def touched(self, old: str | None, new: str, paths: Sequence[str], *, limit: int = 200) -> dict[str, list[str]]:
        """For each commit in ``old..new`` (just ``new`` without ``old``), which of ``paths`` it changed.

        One ``git log`` for the whole range; a commit that changed none of them is not listed.
        """
        with self._repo() as clone:
            commits = [f"{old}..{new}"] if old and _has_commit(clone.repo, old) else ["-1", new]
            out = clone.repo.git.log(f"-n{limit}", "--format=%x1e%H", "--name-only", *commits, "--", *paths)
        touched: dict[str, list[str]] = {}
        for record in out.split("\x1e"):
            sha, *files = record.strip().splitlines() or [""]
            if sha:
                touched[sha] = [p for p in paths if any(_is_under(f, p) for f in files)]
        return touched

    def history(self, head: str, *, limit: int = 200) -> list[CommitInfo]:
        """``head`` and its ancestors, newest first (topological), at most ``limit`` of them."""
        with self._repo() as clone:
            return [_commit_info(c) for c in clone.repo.iter_commits(head, topo_order=True, max_count=limit)]

    def is_ancestor(self, older: str, newer: str) -> bool:
        with self._repo() as clone:
            try:
                clone.repo.git.merge_base("--is-ancestor", older, newer)
                return True
            except GitCommandError as e:
                if e.status == 1:  # the documented "not an ancestor"; other codes are missing objects etc.
                    return False
                raise GitError(f"git merge-base --is-ancestor {older} {newer} in the cache clone of "
                               f"{self.display_url} failed: {_last_line(str(e.stderr or ''))}") from e

    def read_file(self, sha: str, path: str, *, max_bytes: int | None = None) -> str | None:
        """Text of ``path`` at ``sha``, or None when the file does not exist there.

        The blob must be UTF-8 (a terminal GitError names the file, the commit and the first bad byte).
        With ``max_bytes``, a larger blob is refused from its size alone, before any of it is read.
        """
        spec = f"{sha}:{path}"
        with self._repo() as clone:
            repo = clone.repo
            try:
                kind = repo.git.cat_file("-t", spec)
            except GitCommandError:
                return None
            if kind != "blob":
                raise GitError(f"{path} at commit {sha} is a {kind}, not a file")
            size = int(repo.git.cat_file("-s", spec))
            if max_bytes is not None and size > max_bytes:
                raise GitError(f"{path} at commit {sha} is {size} bytes, over the limit of {max_bytes} bytes; "
                               "not read")
            data = repo.git.cat_file("blob", spec, stdout_as_string=False, strip_newline_in_stdout=False)
        try:
            # newline="" semantics: keep CRLF and every other byte as stored.
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GitError(f"{path} at commit {sha} is not UTF-8: byte 0x{data[e.start]:02x} at offset "
                           f"{e.start} ({e.reason})") from e

    def missing_paths(self, sha: str, paths: Sequence[str]) -> list[str]:
        """Those of ``paths`` that do not exist at ``sha``: one tree walk for all of them."""
        with self._repo() as clone:
            tree = clone.repo.commit(sha).tree
            missing = []
            for path in paths:
                try:
                    tree / path
                except KeyError:
                    missing.append(path)
            return missing

    def changed_paths(self, old: str, new: str, path: str) -> list[str]:
        """Files under ``path`` that differ between two commits."""
        return self.changed_under(old, new, [path])[path]

    def changed_under(self, old: str, new: str, paths: Sequence[str]) -> dict[str, list[str]]:
        """For each of ``paths``, the files under it that differ between two commits: one ``git diff``."""
        with self._repo() as clone:
            out = clone.repo.git.diff("--name-only", old, new, "--", *paths)
        files = [line for line in out.splitlines() if line]
        return {p: [f for f in files if _is_under(f, p)] for p in paths}

    def archive(self, sha: str, path: str) -> bytes:
        """Tar of the tree at ``sha:path`` with paths relative to it: a Docker build context."""
        with self._repo() as clone:
            if not _tree_exists(clone.repo, sha, path):
                raise GitError(f"{path}/ does not exist at commit {sha}")
            buf = io.BytesIO()
            clone.repo.archive(buf, treeish=f"{sha}:{path}", format="tar")
        data = buf.getvalue()
        tarfile.open(fileobj=io.BytesIO(data)).getmembers()  # fail here, not in the build, on a bad archive
        return data

    def find_manifest_commit(self, source_sha: str, *, limit: int = 500) -> str | None:
        """The pipeline's commit for ``source_sha`` on the branch (of this remote's values file), found by
        its Source-Commit trailer."""
        with self._repo() as clone:
            out = clone.repo.git.log(
                f"-n{limit}", f"--format=%H%x00%ae%x00%(trailers:key={VALUES_FILE_TRAILER},valueonly)%x1e",
                f"--grep=^Source-Commit: {source_sha}$", self.tracking_ref,
            )
            for record in filter(None, (r.strip() for r in out.split("\x1e"))):
                sha, email, values_file = (record.split("\x00") + ["", ""])[:3]
                if email == self.author_email and self._writes_values_file(clone, sha, values_file.strip()):
                    return sha
        return None

    def last_delivered_source(self, *, limit: int = 500) -> str | None:
        """The Source-Commit trailer of the pipeline's newest commit on the branch (of this remote's
        values file): what runs now."""
        with self._repo() as clone:
            out = clone.repo.git.log(
                f"-n{limit}", "--format=%H%x00%ae%x00%(trailers:key=Source-Commit,valueonly)%x00"
                f"%(trailers:key={VALUES_FILE_TRAILER},valueonly)%x1e", self.tracking_ref)
            for record in filter(None, (r.strip() for r in out.split("\x1e"))):
                sha, email, trailer, values_file = (record.split("\x00") + ["", "", ""])[:4]
                if (email == self.author_email and trailer.strip()
                        and self._writes_values_file(clone, sha, values_file.strip())):
                    return trailer.strip().splitlines()[-1]
        return None

    def _writes_values_file(self, clone: _Clone, sha: str, trailer: str) -> bool:
        """Whether the pipeline commit ``sha`` (its Values-File trailer ``trailer``) is this remote's."""
        if not self.values_file or trailer == self.values_file:
            return True
        if trailer:
            return False
        # Written before the branch carried several environments (no trailer): the file it changed says.
        changed = clone.repo.git.diff_tree("--no-commit-id", "--name-only", "-r", sha).splitlines()
        return self.values_file in changed

    # -- writes --------------------------------------------------------------------------------

    def commit_file(self, *, base_sha: str, path: str, text: str, message: str) -> str:
        """Creates (without pushing) a commit on ``base_sha`` that sets ``path`` to ``text``."""
        with self._repo() as clone, tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            repo = clone.repo
            content, message_file, index_file = Path(tmp, "content"), Path(tmp, "message"), Path(tmp, "index")
            content.write_bytes(text.encode("utf-8"))
            message_file.write_bytes(message.encode("utf-8"))
            # --no-filters: the blob must hold exactly the bytes the values editor produced.
            blob = self._run(["hash-object", "-w", "--no-filters", str(content)], what="hash-object", clone=clone)
            mode = "100644"
            with contextlib.suppress(KeyError):
                mode = oct((repo.commit(base_sha).tree / path).mode)[2:]
            ident = {
                "GIT_INDEX_FILE": str(index_file),
                "GIT_AUTHOR_NAME": self.author_name, "GIT_AUTHOR_EMAIL": self.author_email,
                "GIT_COMMITTER_NAME": self.author_name, "GIT_COMMITTER_EMAIL": self.author_email,
            }
            self._run(["read-tree", base_sha], what="read-tree", clone=clone, env=ident)
            self._run(["update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}"], what="update-index",
                      clone=clone, env=ident)
            tree = self._run(["write-tree"], what="write-tree", clone=clone, env=ident)
            return self._run(["commit-tree", tree, "-p", base_sha, "-F", str(message_file)], what="commit-tree",
                             clone=clone, env=ident)

    def push(self, sha: str) -> None:
        """Fast-forwards the remote branch to ``sha``; raises PushRejected when the branch moved."""
        self._check_transport()
        with self._repo() as clone:
            try:
                self._run(["push", "--porcelain", "origin", f"{sha}:refs/heads/{self.branch}"], what="push",
                          clone=clone, timeout=self.network_timeout, network=True)
            except GitError as e:
                text = e.output
                if not e.timed_out and any(marker in text for marker in _NON_FAST_FORWARD_MARKERS):
                    raise PushRejected(f"push to {self.branch} of {self.display_url} was rejected: the branch "
                                       f"moved ({_last_line(text)})") from e
                raise
            self._run(["update-ref", self.tracking_ref, sha], what="update-ref", clone=clone)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The URL without any userinfo, for messages."""
        parts = urlsplit(self.url)
        if parts.username or parts.password:
            return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        return self.url

    def _check_transport(self) -> None:
        """Refuses, before any connection is made, to send the token where anyone on the path can read it."""
        if not self.token:
            return
        parts = urlsplit(self.url)
        if parts.scheme.lower() != "http":
            return
        host = (parts.hostname or "").lower()
        if not is_loopback(host):
            raise GitError(f"COELHO_GIT_URL {self.display_url} is plain http:// to {host}: refusing to send "
                           "COELHO_GIT_TOKEN unencrypted; use https:// (plain http is allowed to loopback only)",
                           transient=False)

    def _auth_env(self) -> dict[str, str]:
        """An Authorization header passed through git's environment config, never through the URL or argv."""
        self._check_transport()
        if not self.token or urlsplit(self.url).scheme.lower() not in ("http", "https"):
            return {}
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        # Appended after any GIT_CONFIG_* the operator set, so theirs still apply.
        try:
            index = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
        except ValueError:
            index = 0
        return {
            "GIT_CONFIG_COUNT": str(index + 1),
            f"GIT_CONFIG_KEY_{index}": "http.extraHeader",
            f"GIT_CONFIG_VALUE_{index}": f"Authorization: Basic {basic}",
        }

    @contextlib.contextmanager
    def _repo(self) -> Iterator[_Clone]:
        """The bare cache clone, created on first use, held under an exclusive file lock."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            self._acquire(lock)
            path = self.cache_dir / "repo.git"
            if not (path / "HEAD").exists():
                repo = git.Repo.init(path, bare=True)
                repo.create_remote("origin", self.url)
                repo.close()
            _recover_stale_locks(path)
            repo = git.Repo(path)
            if repo.remote("origin").url != self.url:
                repo.remote("origin").set_url(self.url)
            try:
                with repo.git.custom_environment(GIT_TERMINAL_PROMPT="0"):
                    yield _Clone(repo, lock.fileno())
            finally:
                repo.close()

    def _acquire(self, lock: io.TextIOWrapper) -> None:
        """The cache clone's exclusive flock, waited for at most ``lock_timeout`` seconds.

        A holder legitimately keeps it for one network command at most (``network_timeout``); longer
        means a git that outlived its killed parent still runs in the clone (it inherited the lock, see
        ``_run``), and waiting forever would hang the sensor and every run behind it.
        """
        limit = self.lock_timeout if self.lock_timeout is not None else 2 * self.network_timeout + 30
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GitError(f"the cache clone {self.cache_dir / 'repo.git'} of {self.display_url} is still "
                                   f"locked after {limit:g}s by another process (a git left running by a killed "
                                   f"worker?); the lock is {self.cache_dir / '.lock'}", transient=True,
                                   timed_out=True) from None
                time.sleep(0.1)

    def _run(self, args: list[str], *, what: str, clone: _Clone | None = None, timeout: float | None = None,
             network: bool = False, env: Mapping[str, str] | None = None) -> str:
        """Runs ``git <args>`` in its own process group and returns its stripped stdout.

        On timeout the whole group is killed (git-remote-http, ssh and pack helpers run under git);
        os.killpg needs no ``ps``, which slim images lack. A writing git inherits the cache lock's
        descriptor, so even if this process dies the lock stays held until that git is gone too.
        """
        if timeout is None:  # local commands too: a wedged disk or a lock wait must not hold the flock forever
            timeout = self.network_timeout
        full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
        if network:
            full_env.update(self._auth_env())
            # Auto-gc must not detach into the background: it would outlive the timeout and the group.
            # A stalled transfer aborts on its own too (curl's low-speed limit), so a git orphaned by a
            # killed worker cannot hold the cache lock forever on a hung http(s) remote.
            args = ["-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false",
                    "-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, int(timeout))}", *args]
        argv = ["git", *args]
        cwd = None
        pass_fds: tuple[int, ...] = ()
        if clone is not None:
            full_env["GIT_DIR"] = str(clone.repo.git_dir)
            cwd = str(clone.repo.git_dir)
            pass_fds = (clone.lock_fd,)
        try:
            process = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True, pass_fds=pass_fds)
        except OSError as e:
            raise GitError(f"git {what} on {self.display_url} could not start: {e}", transient=False) from e
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise GitError(f"git {what} on {self.display_url} timed out after {timeout:g}s; its process group "
                           "was killed", transient=True, timed_out=True) from None
        except BaseException:
            _kill_group(process)
            raise
        out = stdout.decode("utf-8", "replace")
        if process.returncode != 0:
            err = _scrub(stderr.decode("utf-8", "replace"), self.token)
            raise GitError(f"git {what} on {self.display_url} failed (exit {process.returncode}): "
                           f"{err.strip() or 'no message'}", transient=network and classify_git_stderr(err),
                           output=f"{_scrub(out, self.token)}\n{err}")
        return out.strip()


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to every process of the command's group, then reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=5)


# Lock files a killed git may leave behind; git refuses to work while any of them exists.
_LOCK_SUFFIX = ".lock"


def _recover_stale_locks(git_dir: Path) -> None:
    """Removes every ``*.lock`` in the cache clone; called with its exclusive flock held.

    All of them, not only old ones: every git that writes into the clone runs while its writer holds
    the flock and inherits that descriptor (``_run``'s pass_fds), so the flock stays taken for as long
    as any such git lives, even one whose Python parent was killed. Holding the flock therefore proves
    no live writer exists, and a lock file of any age is debris. An age threshold would be weaker both
    ways: it keeps a fresh lock from a git killed a second ago, and guesses about a slow live one.
    """
    # Where git takes locks; not objects/??/ (no locks there, and thousands of loose objects to list).
    candidates = [*git_dir.glob(f"*{_LOCK_SUFFIX}"), *(git_dir / "refs").rglob(f"*{_LOCK_SUFFIX}"),
                  *(git_dir / "objects" / "info").rglob(f"*{_LOCK_SUFFIX}"),
                  *(git_dir / "objects" / "pack").glob(f"*{_LOCK_SUFFIX}")]
    for lock in candidates:
        if lock.is_file() or lock.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
                log.warning("removed stale %s left in the cache clone by an interrupted git", lock)


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


def _is_under(file: str, path: str) -> bool:
    """``file`` is ``path`` or inside it, by whole path components (``apps/a`` does not hold ``apps/ab/f``)."""
    return file == path or file.startswith(path.rstrip("/") + "/")


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
    network_timeout: float = NETWORK_TIMEOUT_SECONDS
    values_file: str = ""  # see GitRemote.values_file

    _remote: GitRemote | None = PrivateAttr(default=None)

    def remote(self) -> GitRemote:
        if self._remote is None:
            self._remote = GitRemote(
                url=self.url, branch=self.branch, cache_dir=Path(self.cache_dir), token=self.token,
                author_name=self.author_name, author_email=self.author_email,
                network_timeout=self.network_timeout, values_file=self.values_file,
            )
        return self._remote
