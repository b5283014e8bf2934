"""Image building (docker SDK against a real engine) and registry lookups (Docker Registry HTTP API v2)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import docker
import requests
from docker.errors import APIError, DockerException
from pydantic import PrivateAttr


class ImageError(Exception):
    """A build, push or registry lookup failed; the message names the image and the cause."""


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
    """Builds a context tar and pushes the result, streaming the engine's log line by line."""

    api: docker.APIClient
    build_args: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    auth: Mapping[str, str] | None = None  # {"username": ..., "password": ...}

    def build_and_push(self, *, context_tar: bytes, repository: str, tag: str,
                       log: Callable[[str], None]) -> BuiltImage:
        ref = f"{repository}:{tag}"
        image_id = None
        lines = 0
        try:
            stream = self.api.build(
                fileobj=io.BytesIO(context_tar), custom_context=True, tag=ref, rm=True, forcerm=True,
                decode=True, buildargs=dict(self.build_args), network_mode=self.network_mode,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise ImageError(f"build of {ref} failed: {chunk['error'].strip()}")
                text = chunk.get("stream", "").rstrip()
                if text:
                    lines += 1
                    log(text)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except (APIError, DockerException) as e:
            raise ImageError(f"build of {ref} failed: {e}") from None
        if not image_id:
            raise ImageError(f"build of {ref} ended without an image id")
        digest = None
        try:
            # Push errors arrive as data in the stream, never as exceptions: every chunk is checked.
            for event in self.api.push(repository, tag=tag, stream=True, decode=True,
                                       auth_config=dict(self.auth) if self.auth else None):
                if "error" in event:
                    raise ImageError(f"push of {ref} failed: {event['error'].strip()}")
                digest = event.get("aux", {}).get("Digest", digest)
        except (APIError, DockerException) as e:
            raise ImageError(f"push of {ref} failed: {e}") from None
        if not digest:
            raise ImageError(f"push of {ref} reported no digest")
        return BuiltImage(ref=ref, image_id=image_id, digest=digest, log_lines=lines)


@dataclass
class Registry:
    """Read-only view of a v2 registry: does a tag exist, and what is its digest."""

    prefix: str  # host[:port]/path, e.g. 127.0.0.1:5000/coelho
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    session: requests.Session = field(default_factory=requests.Session)

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
            raise ImageError(f"registry {self.host} answered {response.status_code} for {repository}:{tag}")
        return response.headers.get("Docker-Content-Digest")

    def _base_url(self) -> str:
        # Plain HTTP only for loopback registries, as the Docker engine itself allows.
        scheme = "http" if self.host.split(":")[0] in ("127.0.0.1", "localhost") else "https"
        return f"{scheme}://{self.host}"

    def _request(self, method: str, url: str) -> requests.Response:
        headers = {"Accept": _MANIFEST_TYPES}
        auth = (self.username, self.password) if self.username and self.password else None
        try:
            response = self.session.request(method, url, headers=headers, auth=auth, timeout=self.timeout)
            if response.status_code == 401 and "bearer" in response.headers.get("WWW-Authenticate", "").lower():
                token = self._bearer_token(response.headers["WWW-Authenticate"], auth)
                headers["Authorization"] = f"Bearer {token}"
                response = self.session.request(method, url, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise ImageError(f"registry {self.host} is unreachable: {type(e).__name__}") from None
        if response.status_code in (401, 403):
            raise ImageError(f"registry {self.host} refused access ({response.status_code}); "
                             "check COELHO_REGISTRY_USERNAME / COELHO_REGISTRY_PASSWORD")
        return response

    def _bearer_token(self, challenge: str, auth: tuple[str, str] | None) -> str:
        """The token flow of the distribution spec: realm, service and scope from the challenge."""
        # key="value" pairs; a scope may itself hold commas ("pull,push"), so split on the quotes.
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise ImageError(f"registry {self.host} asked for a bearer token without a realm")
        try:
            response = self.session.get(realm, params=params, auth=auth, timeout=self.timeout)
            body = response.json() if response.ok else {}
            token = body.get("token") or body.get("access_token")
        except (requests.RequestException, ValueError):
            token = None
        if not token:
            raise ImageError(f"registry {self.host} token service gave no token")
        return token


class RegistryResource(dg.ConfigurableResource):
    """The registry the images are pushed to and Argo CD's cluster pulls from."""

    prefix: str
    username: str | None = None
    password: str | None = None

    def registry(self) -> Registry:
        return Registry(prefix=self.prefix, username=self.username, password=self.password)


class ImageBuilderResource(dg.ConfigurableResource):
    """A Docker engine reached through DOCKER_HOST (or the default socket)."""

    build_args: dict[str, str] = {}
    network_mode: str | None = None
    registry_username: str | None = None
    registry_password: str | None = None

    _api: docker.APIClient | None = PrivateAttr(default=None)

    def builder(self) -> ImageBuilder:
        if self._api is None:
            try:
                self._api = docker.from_env(timeout=600).api
                self._api.ping()
            except DockerException as e:
                raise ImageError(f"no Docker engine answers (DOCKER_HOST or the default socket): {e}") from None
        auth = None
        if self.registry_username and self.registry_password:
            auth = {"username": self.registry_username, "password": self.registry_password}
        return ImageBuilder(api=self._api, build_args=self.build_args, network_mode=self.network_mode, auth=auth)
