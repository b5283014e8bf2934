"""Image building (docker SDK against a real engine) and registry lookups (Docker Registry HTTP API v2)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import dagster as dg
import docker
import requests
import urllib3.exceptions
from docker.errors import APIError, DockerException
from pydantic import PrivateAttr

from coelho_pipeline.errors import PipelineError, http_status_is_transient
from coelho_pipeline.loopback import is_loopback


class ImageError(PipelineError):
    """A build, push or registry lookup failed; the message names the image and the cause."""


# Push errors the engine reports as text in its stream: the registry or the network, not the image.
_TRANSIENT_PUSH_MARKERS = (
    "connection refused", "connection reset", "i/o timeout", "timeout", "timed out", "eof",
    "no such host", "temporary failure", "503", "502", "504", "500 internal", "429", "toomanyrequests",
    "service unavailable", "bad gateway",
)

# What the docker SDK raises when the engine stops answering: requests wraps some, the raw stream
# (urllib3) surfaces the rest.
_ENGINE_GONE = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
_ENGINE_TIMEOUT = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def docker_host() -> str:
    """The engine the SDK talks to (DOCKER_HOST or the default socket), without any userinfo."""
    raw = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    parts = urlsplit(raw)
    if parts.username or parts.password:
        raw = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
    return f"DOCKER_HOST={raw}"


def _is_timeout(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(6):  # requests and urllib3 nest the timeout a few causes deep
        if seen is None:
            return False
        if isinstance(seen, _ENGINE_TIMEOUT) or "timed out" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and
                                                      isinstance(seen.args[0], BaseException) else None)
    return False


class _LogBatcher:
    """Build output to the ``log`` callback in batches: one Dagster event per line would flood the
    event log (and the sqlite instance) on a chatty build.

    The engine's stream chunks are not line-aligned (a line can arrive in two chunks), so a line is
    only emitted once its newline has arrived; ``close`` emits what is left.
    """

    def __init__(self, log: Callable[[str], None], max_lines: int, max_seconds: float) -> None:
        self._log = log
        self._max_lines = max_lines
        self._max_seconds = max_seconds
        self._pending: list[str] = []
        self._partial = ""
        self._since = time.monotonic()
        self.lines = 0

    def add(self, text: str) -> None:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._append(line)
        if self._pending and time.monotonic() - self._since >= self._max_seconds:
            self.flush()

    def _append(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self._pending.append(line)
            self.lines += 1
            if len(self._pending) >= self._max_lines:  # one engine chunk may hold thousands
                self.flush()

    def flush(self) -> None:
        if self._pending:
            self._log("\n".join(self._pending))
            self._pending = []
        self._since = time.monotonic()

    def close(self) -> None:
        """Everything still held, the unterminated last line included."""
        if self._partial:
            self._append(self._partial)
            self._partial = ""
        self.flush()


# Arguments every build accepts without an ARG line (the engine's proxy settings).
_PREDEFINED_ARGS = frozenset(
    name for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY") for name in (proxy, proxy.lower())
)


def declared_build_args(dockerfile: str) -> frozenset[str]:
    """The names the Dockerfile's ARG instructions declare (every stage, defaults or not)."""
    names: set[str] = set()
    logical = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside a continued instruction, as the engine reads it
            continue
        if line.endswith("\\"):  # a continued instruction
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, rest = logical.partition(" ")
        logical = ""
        if instruction.upper() == "ARG":
            try:
                words = shlex.split(rest)  # a default may be quoted: ARG B="two words"
            except ValueError:
                words = rest.split()
            names.update(word.split("=", 1)[0] for word in words)
    return frozenset(names)


def dockerfile_of(context_tar: bytes, path: str = "Dockerfile") -> str | None:
    """The Dockerfile inside a build context tar, or None when it has none."""
    with tarfile.open(fileobj=io.BytesIO(context_tar)) as tar:
        for name in (path, f"./{path}"):
            try:
                member = tar.getmember(name)
            except KeyError:
                continue
            data = tar.extractfile(member)
            return data.read().decode("utf-8", errors="replace") if data else None
    return None


def args_for(context_tar: bytes, build_args: Mapping[str, str]) -> dict[str, str]:
    """Only the build arguments the context's Dockerfile declares: the engine warns about every other
    one in the build log, and an app should not see settings meant for another."""
    dockerfile = dockerfile_of(context_tar)
    if dockerfile is None:
        return dict(build_args)  # the engine reports the missing Dockerfile itself
    wanted = declared_build_args(dockerfile) | _PREDEFINED_ARGS
    return {name: value for name, value in build_args.items() if name in wanted}


_MANIFEST_TYPES = ", ".join([
    # Without these the registry answers with a schema1 manifest whose digest differs from the pushed one.
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    image_id: str
    digest: str
    log_lines: int


@dataclass
class ImageBuilder:
    """Builds a context tar and pushes the result, streaming the engine's log in batches of lines."""

    api: docker.APIClient
    build_args: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    auth: Mapping[str, str] | None = field(default=None, repr=False)  # {"username": ..., "password": ...}
    engine: str = field(default_factory=docker_host)  # for messages: which engine failed
    log_batch_lines: int = 200
    log_batch_seconds: float = 2.0

    def build_and_push(self, *, context_tar: bytes, repository: str, tag: str,
                       log: Callable[[str], None], previous_tag: str | None = None) -> BuiltImage:
        """``log`` receives the build output as batches of lines (one string, newline-separated), at most
        ``log_batch_lines`` lines or ``log_batch_seconds`` apart, and the rest at the end.

        ``previous_tag``: the image this one replaces. When the engine does not hold it (a new or
        pruned engine, a build pod), it is pulled and offered as a cache source, so the layers
        before the first changed instruction are reused rather than rebuilt.
        """
        ref = f"{repository}:{tag}"
        image_id = None
        batch = _LogBatcher(log, self.log_batch_lines, self.log_batch_seconds)
        cache_from = self._cache_source(repository, previous_tag, log) if previous_tag else None
        try:
            stream = self.api.build(
                fileobj=io.BytesIO(context_tar), custom_context=True, tag=ref, rm=True, forcerm=True,
                decode=True, buildargs=args_for(context_tar, self.build_args), network_mode=self.network_mode,
                cache_from=cache_from,
                # build() alone defaults to no timeout at all; every other SDK call uses the client's.
                timeout=self.api.timeout,
            )
            for chunk in stream:
                if "error" in chunk:
                    batch.close()  # the lines leading to the failure first
                    raise ImageError(f"build of {ref} failed: {chunk['error'].strip()}", transient=False)
                batch.add(chunk.get("stream", ""))
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except ImageError:
            raise
        except APIError as e:
            batch.close()
            raise ImageError(f"build of {ref} failed: the Docker engine ({self.engine}) answered {e}",
                             transient=http_status_is_transient(e.status_code)) from e
        except (DockerException, *_ENGINE_GONE) as e:
            batch.close()
            raise self._engine_error(f"build of {ref}", e) from e
        batch.close()
        if not image_id:
            raise ImageError(f"build of {ref} ended without an image id")
        digest = None
        try:
            # Push errors arrive as data in the stream, never as exceptions: every chunk is checked.
            for event in self.api.push(repository, tag=tag, stream=True, decode=True,
                                       auth_config=dict(self.auth) if self.auth else None):
                if "error" in event:
                    text = event["error"].strip()
                    raise ImageError(f"push of {ref} failed: {text}",
                                     transient=any(m in text.lower() for m in _TRANSIENT_PUSH_MARKERS))
                digest = event.get("aux", {}).get("Digest", digest)
        except ImageError:
            raise
        except APIError as e:
            raise ImageError(f"push of {ref} failed: the Docker engine ({self.engine}) answered {e}",
                             transient=http_status_is_transient(e.status_code)) from e
        except (DockerException, *_ENGINE_GONE) as e:
            raise self._engine_error(f"push of {ref}", e) from e
        if not digest:
            raise ImageError(f"push of {ref} reported no digest")
        return BuiltImage(ref=ref, image_id=image_id, digest=digest, log_lines=batch.lines)

    def _cache_source(self, repository: str, previous_tag: str, log: Callable[[str], None]) -> list[str] | None:
        """[previous image] when it had to be pulled; None when the engine holds it already (its own
        layer cache then applies) or it cannot be had (the build simply starts from scratch)."""
        previous = f"{repository}:{previous_tag}"
        try:
            self.api.inspect_image(previous)
            return None
        except APIError as e:
            if e.status_code != 404:
                return None
        try:
            for event in self.api.pull(repository, tag=previous_tag, stream=True, decode=True,
                                       auth_config=dict(self.auth) if self.auth else None):
                if "error" in event:
                    log(f"cache source {previous} not pulled ({event['error'].strip()}): building without it")
                    return None
        except (DockerException, *_ENGINE_GONE) as e:
            log(f"cache source {previous} not pulled ({type(e).__name__}): building without it")
            return None
        log(f"pulled {previous} as the cache source of this build")
        return [previous]

    def _engine_error(self, what: str, error: BaseException) -> ImageError:
        if _is_timeout(error):
            timeout = getattr(self.api, "timeout", None)
            return ImageError(f"{what} failed: the Docker engine ({self.engine}) sent nothing for "
                              f"{timeout}s (read timeout)", transient=True)
        return ImageError(f"{what} failed: the Docker engine ({self.engine}) went away or is not answering "
                          f"({type(error).__name__}: {error})", transient=True)


REGISTRY_CONCURRENCY = 8  # below requests' connection pool per host (10): every request reuses one


@dataclass
class Registry:
    """Read-only view of a v2 registry: does a tag exist, and what is its digest."""

    prefix: str  # host[:port]/path, e.g. 127.0.0.1:5000/coelho
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # read timeout, seconds without a byte of the answer
    session: requests.Session = field(default_factory=requests.Session)
    connect_timeout: float = 5.0

    @property
    def host(self) -> str:
        return self.prefix.split("/", 1)[0]

    def repository(self, image: str) -> str:
        return f"{self.prefix}/{image}"

    def digest(self, repository: str, tag: str) -> str | None:
        """Digest of ``repository:tag`` (repository with host), or None when the tag does not exist."""
        host, _, name = repository.partition("/")
        if host != self.host:
            raise ImageError(f"{repository} is not in registry {self.host}")
        url = f"{self._base_url()}/v2/{name}/manifests/{tag}"
        response = self._request("HEAD", url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ImageError(f"registry {self.host} answered {response.status_code} to HEAD {url}",
                             transient=http_status_is_transient(response.status_code))
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            # A proxy or a non-registry server: "no digest" must not read as "tag missing" (a rebuild).
            raise ImageError(f"registry {self.host} answered 200 to HEAD {url} without a Docker-Content-Digest "
                             f"header (Accept: {_MANIFEST_TYPES}); is {self.host} a v2 registry?",
                             transient=False)
        return digest

    def digests(self, refs: Sequence[tuple[str, str]]) -> list[str | None]:
        """:meth:`digest` of each ``(repository, tag)``, in order, asked side by side: a catalog of many
        apps must not wait on one round trip per app. The first error raises."""
        if len(refs) < 2:
            return [self.digest(repository, tag) for repository, tag in refs]
        with ThreadPoolExecutor(max_workers=min(len(refs), REGISTRY_CONCURRENCY),
                                thread_name_prefix="registry") as pool:
            return list(pool.map(lambda ref: self.digest(*ref), refs))

    def _base_url(self) -> str:
        # Plain HTTP only for loopback registries, as the Docker engine itself allows.
        scheme = "http" if is_loopback(urlsplit(f"//{self.host}").hostname) else "https"
        return f"{scheme}://{self.host}"

    def _timeouts(self) -> tuple[float, float]:
        return (self.connect_timeout, self.timeout)

    def _request(self, method: str, url: str) -> requests.Response:
        headers = {"Accept": _MANIFEST_TYPES}
        auth = (self.username, self.password) if self.username and self.password else None
        try:
            response = self.session.request(method, url, headers=headers, auth=auth, timeout=self._timeouts())
            if response.status_code == 401 and "bearer" in response.headers.get("WWW-Authenticate", "").lower():
                token = self._bearer_token(response.headers["WWW-Authenticate"], auth)
                headers["Authorization"] = f"Bearer {token}"
                response = self.session.request(method, url, headers=headers, timeout=self._timeouts())
        except requests.RequestException as e:
            kind = "timed out" if isinstance(e, requests.Timeout) else "is unreachable"
            raise ImageError(
                f"registry {self.host} {kind}: {method} {url} with Accept: {_MANIFEST_TYPES} "
                f"(connect timeout {self.connect_timeout:g}s, read timeout {self.timeout:g}s) got no answer: "
                f"{type(e).__name__}: {_scrub_password(str(e), self.password)}", transient=True) from e
        if response.status_code in (401, 403):
            raise ImageError(f"registry {self.host} refused access ({response.status_code}) to {method} {url}; "
                             "check COELHO_REGISTRY_USERNAME / COELHO_REGISTRY_PASSWORD", transient=False)
        return response

    def _bearer_token(self, challenge: str, auth: tuple[str, str] | None) -> str:
        """The token flow of the distribution spec: realm, service and scope from the challenge."""
        # key="value" pairs; a scope may itself hold commas ("pull,push"), so split on the quotes.
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise ImageError(f"registry {self.host} asked for a bearer token without a realm")
        realm_parts = urlsplit(realm)
        if auth and realm_parts.scheme != "https" and not is_loopback(realm_parts.hostname):
            # The token service gets the registry password: never in clear text across a network.
            raise ImageError(f"registry {self.host} sent its token service as {realm_parts.scheme}://"
                             f"{realm_parts.hostname}; refusing to send COELHO_REGISTRY_PASSWORD there "
                             "unencrypted (https, or loopback, only)", transient=False)
        try:
            response = self.session.get(realm, params=params, auth=auth, timeout=self._timeouts())
        except requests.RequestException as e:
            raise ImageError(f"registry {self.host} token service {realm} got no answer "
                             f"({type(e).__name__})", transient=True) from e
        try:
            body = response.json() if response.ok else {}
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise ImageError(f"registry {self.host} token service {realm} gave no token "
                             f"(HTTP {response.status_code})",
                             transient=not response.ok and http_status_is_transient(response.status_code))
        return token


def _scrub_password(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class RegistryResource(dg.ConfigurableResource):
    """The registry the images are pushed to and Argo CD's cluster pulls from."""

    prefix: str
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 10.0  # read timeout of every registry request
    connect_timeout_seconds: float = 5.0

    def registry(self) -> Registry:
        return Registry(prefix=self.prefix, username=self.username, password=self.password,
                        timeout=self.timeout_seconds, connect_timeout=self.connect_timeout_seconds)


class ImageBuilderResource(dg.ConfigurableResource):
    """A Docker engine reached through DOCKER_HOST (or the default socket)."""

    build_args: dict[str, str] = {}
    network_mode: str | None = None
    registry_username: str | None = None
    registry_password: str | None = None

    # Read timeout of the engine's API: a build step may print nothing for this long.
    timeout_seconds: float = 600.0
    # Images built side by side when one commit changes several apps (COELHO_BUILD_CONCURRENCY).
    concurrency: int = 3

    _api: docker.APIClient | None = PrivateAttr(default=None)

    @contextlib.contextmanager
    def own_builder(self) -> Iterator[ImageBuilder]:
        """A builder on a client of its own, closed afterwards: builds that run side by side in threads
        must not share one HTTP connection pool."""
        api = self._connect()
        try:
            yield self._builder_on(api)
        finally:
            api.close()

    def builder(self) -> ImageBuilder:
        """A builder on a client that answers now: the cached one, or a new one when the engine restarted
        (a dead client's pooled connections would fail every later build of the run)."""
        if self._api is not None and not _answers(self._api):
            self._api.close()
            self._api = None
        if self._api is None:
            self._api = self._connect()
        return self._builder_on(self._api)

    def _connect(self) -> docker.APIClient:
        api = None
        try:
            api = docker.from_env(timeout=self.timeout_seconds).api
            api.ping()
        except (DockerException, *_ENGINE_GONE) as e:
            if api is not None:
                api.close()
            kind = "timed out" if _is_timeout(e) else "is unreachable"
            raise ImageError(f"the Docker engine ({docker_host()}) {kind}: "
                             f"{type(e).__name__}: {e}", transient=True) from e
        return api

    def _builder_on(self, api: docker.APIClient) -> ImageBuilder:
        auth = None
        if self.registry_username and self.registry_password:
            auth = {"username": self.registry_username, "password": self.registry_password}
        return ImageBuilder(api=api, build_args=self.build_args, network_mode=self.network_mode, auth=auth)


def _answers(api: docker.APIClient) -> bool:
    try:
        return bool(api.ping())
    except (DockerException, *_ENGINE_GONE):
        return False
