"""TEST DOUBLE of the Argo CD application controller, served by kmock on 127.0.0.1.

This is not Argo CD. It is a small state machine that edits ``argoproj.io/v1alpha1``
Application objects in a kmock ``KubernetesEmulator`` the way Argo CD's application controller
does, so that code talking to the Kubernetes API (``coelho_pipeline.resources.argocd``, the
Dagster assets and jobs that use it) can be tested end to end without a cluster:

* refresh annotation ``argocd.argoproj.io/refresh`` -> resolve ``spec.source.targetRevision`` on
  ``spec.source.repoURL`` with ``git ls-remote``, compare the images the values file asks for
  with the live Deployments, write ``status.sync`` / ``status.resources`` / ``status.health`` /
  ``status.reconciledAt``, remove the annotation;
* top-level ``operation`` -> ``status.operationState`` Running; after ``sync_delay`` read the
  values file at the revision from Git, write the Deployments, phase Succeeded (``syncResult``,
  ``finishedAt``, ``history``), remove ``operation``, ``status.sync`` Synced at the revision,
  health Progressing with ``reconciledAt`` left as it was (older than ``finishedAt``, as after a
  real sync); then Healthy after ``health_delay`` with a new ``reconciledAt``;
* switches: ``fail_next_sync``, ``degrade``/``recover``, ``stale_health_after_sync`` (the
  kargo#41 race: Healthy from the previous comparison, ``reconciledAt < finishedAt``),
  ``set_live_image`` (drift), ``add_condition``, ``auto_sync``, ``stall_rollout``/
  ``unstall_rollout`` (ProgressDeadlineExceeded, Application Degraded), ``crash_loop``/
  ``stop_crash_loop`` (restartCount grows, everything stays Healthy);
* ``Replace=true`` in an operation's ``syncOptions`` (``argocd app sync --force``/``--replace``):
  each Deployment is deleted and created again (syncResult message ``replaced``);
* the Deployment and ReplicaSet controllers and the kubelet, for the Deployments the double
  writes (read them with ``deployments()`` / ``pods()`` or any client):

  - ``metadata.generation`` is 1 on creation and goes up with every spec change, in the same
    write (as the API server does). A spec change someone else writes through the API gets its
    bump from the controller one ``poll_interval`` later (kmock does not bump it).
  - A rollout starts on creation or a template change (also ``spec.replicas``): ``status`` shows
    ``observedGeneration == generation``, the old Pods as ``replicas``/``readyReplicas``/
    ``availableReplicas``, no ``updatedReplicas``, ``Progressing`` True ``ReplicaSetUpdated``.
    It finishes ``health_delay`` after the sync applied (after the stale window with
    ``stale_health_after_sync``), in the same tick as, and before, the Application turns
    Healthy: new Pods are created, the old ones deleted, ``updatedReplicas == readyReplicas ==
    availableReplicas == replicas``, ``Available`` True ``MinimumReplicasAvailable``,
    ``Progressing`` True ``NewReplicaSetAvailable``. Counts that are 0 are absent, as the API
    omits them (the official client reads None). A live edit (``set_live_image``) rolls out the
    same way without touching the Application's health.
  - Pods (``v1/pods``): ``<deployment>-<pod-template-hash>-<5 chars>``, template labels plus
    ``pod-template-hash``, ``Running``, ready at once, every container ``restartCount: 0``. A
    Pod someone deletes is replaced. ReplicaSet objects are not stored (the Pods' owner
    references name one). A Deployment deleted or replaced (``put_object``) loses its Pods.
  - ``stall_rollout``: the Deployment's current rollout (or its next one) never finishes; at the
    time it would have, ``Progressing`` turns False ``ProgressDeadlineExceeded`` and the
    Application Degraded (``Deployment "<name>" exceeded its progress deadline``). The new
    ReplicaSet's Pods never appear (the old ones keep serving), so ``updatedReplicas`` stays
    absent. ``unstall_rollout`` lets it finish at the next tick.
  - ``crash_loop``: every ``every`` seconds the first container of each of the Deployment's Pods
    restarts (``restartCount`` + 1, ``lastState.terminated``); the Pods stay ready, so the
    Deployment stays Available and the Application Healthy (Argo CD's health ignores restarts).
* ``serve_resource`` / ``put_object`` / ``delete_object``: other kinds in discovery and objects
  stored as a cluster holds them (for diffs against the rendered chart); nothing reconciles them
  (a Deployment stored this way keeps the status it was given and gets no Pods until a sync or
  ``set_live_image`` writes it).

Not emulated: Helm rendering (only the image keys of the values file are read, with
``spec.source.helm.parameters`` overrides), multi-source apps, sync waves/hooks/pruning,
retries (``operation.retry``), self-heal, Terminating, sync windows, the Argo CD API server.
The periodic resync (Argo CD's ``timeout.reconciliation``, 3 minutes) is off unless
``resync_interval`` is given. Auto-sync (off by default) runs once per revision.

It runs in its own daemon thread with its own asyncio loop, so it works inside pytest (sync or
async tests) and for subprocesses (the Dagster daemon's run workers) that reach it through
``.url`` / ``.write_kubeconfig(path)``.

kmock 0.8 notes (environment.md §8), and how this module deals with them:

* PUT answers 404 -> every write here is a merge PATCH (``Content-Type:
  application/merge-patch+json``), like ``kubectl patch --type merge``; ``null`` deletes a key.
* POST answers 200, not 201 -> creation goes through POST and the object is read back.
* No ``resourceVersion`` -> no optimistic concurrency. The controller reads the stored object
  and patches only the fields it owns; a client patch can land between the read and the write
  (the real controller uses resourceVersion conflicts for this). Low risk at these speeds.
* ``("group/version/plural", ns, name) in k.objects`` is always False (the string is not
  parsed by ``__contains__``); this module keys by ``kmock.resource(...)`` instances.
* Label/field selectors are ignored -> readers must filter client-side.
* Watches never end by themselves -> the controller does not watch; it polls the stored
  objects every ``poll_interval`` seconds *in the loop thread* (``k.objects[...]`` is a plain
  in-memory structure, safe to read there). Writes go through kmock's own in-loop HTTP client
  (``k.patch``/``k.post``) rather than mutating ``k.objects`` directly: that path takes the
  emulator's lock, applies merge-patch semantics and publishes MODIFIED/ADDED events to
  watchers. Direct ``k.objects[...].patch(...)`` also works (probed) but is invisible to watches.
* A reaction such as ``k[PATCH, resource] << 403`` changes the *answer* only: the emulator still
  applies the patch to the stored object. Permission errors are therefore not emulated here;
  test them with an injected API object that raises ``ApiException``.
* Every request is recorded by kmock forever (``list(k)``); long runs with fast client polling
  grow memory by a few hundred bytes per request. Fine for tests. Likewise every PATCH keeps a
  full copy of the object in its history, so the rollout controller writes only on transitions
  (and on each ``crash_loop`` restart).
* kmock sets nothing on a created object (no uid, creationTimestamp, generation) and has no
  ``status`` subresource: a POST stores the ``status`` it is given and a PATCH of the object can
  change it. The double sets those fields itself.
* Core discovery (``GET /api/v1``) answers ``groupVersion: "/v1"`` and lists only declared
  kinds; ``GET /api/v1/`` (trailing slash, what ``CoreV1Api.get_api_resources`` sends) is 404.
* The official client refuses objects without the fields its models require: Pods need
  ``spec.containers``, container statuses ``imageID``, conditions ``type``/``status``; the
  double writes them.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kmock
from ruamel.yaml import YAML

APPLICATIONS = "argoproj.io/v1alpha1/applications"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
DEFAULT_IMAGE_VALUES: Mapping[str, str] = {
    "fastapi.image": "coelho-realtime-fastapi",
    "kafkaProducers.image": "coelho-realtime-kafka-producers",
    "sveltekit.image": "coelho-realtime-sveltekit",
}
DUMMY_TOKEN = "kmock-dummy-token"  # noqa: S105 - not a credential; kmock accepts anything
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# Parsed resource keys: ``(str, ns, name) in k.objects`` is always False in kmock 0.8
# (``__contains__`` does not parse the string, ``__getitem__`` does).
_APP_RES = kmock.resource(APPLICATIONS)
_DEPLOY_RES = kmock.resource(DEPLOYMENTS)
_POD_RES = kmock.resource(PODS)
# The alphabet of Kubernetes' generated name parts (no vowels, no 0/1/3: no words, no look-alikes).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_log = logging.getLogger(__name__)


class DoubleError(RuntimeError):
    """The double itself failed (startup, git, a call from the test into the loop)."""


class _RenderError(Exception):
    """Git or values problems: what Argo CD reports as ComparisonError."""


@dataclass
class _Operation:
    spec: dict[str, Any]
    revision: str
    started_at: str
    apply_at: float


@dataclass
class _AppState:
    op: _Operation | None = None
    compare_requested: bool = False
    healthy_at: float | None = None  # rollout finishes (monotonic)
    stale_until: float | None = None  # stale health shown until (monotonic)
    degraded: str | None = None
    auto_synced: set[str] = field(default_factory=set)
    history_id: int = 0
    compared_at: float = 0.0  # monotonic time of the last comparison
    rollout_done: float | None = None  # the last sync's rollout finishes (monotonic)
    health_dirty: bool = False  # a Deployment's rollout changed what health says: write it again


@dataclass
class _Rollout:
    """What the Deployment controller knows about one Deployment the double wrote."""

    uid: str | None
    generation: int  # the generation this status describes (observedGeneration)
    spec_digest: str
    template_hash: str  # pod-template-hash of the new ReplicaSet
    replicas: int
    done_at: float | None  # monotonic; None = rollout complete
    exceeded: bool = False  # stalled past done_at: ProgressDeadlineExceeded
    pods: dict[str, str] = field(default_factory=dict)  # Pod name -> its pod-template-hash
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> last written


@dataclass
class _CrashLoop:
    every: float
    next_at: float  # monotonic


@dataclass(frozen=True)
class Event:
    """Something the double did, for assertions: ``at`` is ``time.monotonic()``."""

    at: float
    kind: str  # refresh | operation-started | operation-finished | health | stale-health | auto-sync | live-edit | rollout
    app: str  # namespace/name ("" for events not tied to an Application)
    detail: Mapping[str, Any]


def application_from_yaml(text_or_path: str | os.PathLike[str], *, name: str | None = None) -> dict[str, Any]:
    """The Application document of a (multi-document) manifest such as k3d/argocd/application.yaml."""
    text = str(text_or_path)
    if isinstance(text_or_path, os.PathLike) or ("\n" not in text and Path(text).is_file()):
        text = Path(text_or_path).read_text()
    docs = [d for d in YAML(typ="safe").load_all(text) if isinstance(d, dict)]
    apps = [
        d
        for d in docs
        if d.get("kind") == "Application" and (name is None or (d.get("metadata") or {}).get("name") == name)
    ]
    if len(apps) != 1:
        raise DoubleError(f"expected one Application{f' named {name}' if name else ''}, found {len(apps)}")
    return apps[0]


def write_kubeconfig(path: str | os.PathLike[str], server: str, *, token: str = DUMMY_TOKEN, context: str = "kmock",
                     namespace: str = "argocd") -> Path:
    """A kubeconfig for the API at ``server`` with a bearer ``token`` (kmock accepts any; the token tells
    the recorded requests of different clients apart)."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(kubeconfig, indent=2) + "\n")  # JSON is YAML
    return target


class ArgoCDControllerDouble:
    """TEST DOUBLE of the Argo CD application controller over a kmock Kubernetes API.

    Args:
        image_values: values-file key of an image block -> Deployment name. The block is either
            ``{repository, tag}`` (coelho-pipeline's layout; an empty tag falls back to the
            chart's ``appVersion``, and ``<app>.enabled: false`` renders no Deployment, as the
            chart does) or a ``repo:tag`` string.
        deploy_namespace: namespace of the Deployments (``spec.destination.namespace`` wins).
        sync_delay: seconds an operation stays Running before it applies.
        health_delay: seconds from apply to Healthy: how long a Deployment's rollout takes (also
            for live edits), and when a stalled one exceeds its progress deadline.
        stale_health_after_sync: after a sync, keep showing the previous Healthy with the old
            ``reconciledAt`` for ``stale_health_seconds`` (a refresh ends it early).
        auto_sync: when ``spec.syncPolicy.automated`` is set, sync a new OutOfSync revision
            once (Argo CD runs automated sync at most once per revision).
        compare_on_live_change: re-compare when a Deployment is edited via ``set_live_image``
            (Argo CD watches live objects and refreshes on change).
        whole_second_timestamps: write timestamps like Kubernetes ``metav1.Time`` (whole
            seconds) instead of microseconds.
        poll_interval: controller loop period.
        resync_interval: re-compare every Application this often (seconds), as Argo CD's periodic
            reconciliation does; that is how a push nobody announced reaches ``status.sync``.
            None (default) = only on refresh requests and live edits.
    """

    def __init__(
        self,
        *,
        image_values: Mapping[str, str] = DEFAULT_IMAGE_VALUES,
        deploy_namespace: str = "coelho-realtime",
        sync_delay: float = 0.2,
        health_delay: float = 0.2,
        stale_health_after_sync: bool = False,
        stale_health_seconds: float = 0.5,
        auto_sync: bool = False,
        compare_on_live_change: bool = True,
        whole_second_timestamps: bool = False,
        poll_interval: float = 0.05,
        git_timeout: float = 30.0,
        resync_interval: float | None = None,
    ) -> None:
        self.image_values = dict(image_values)
        self.deploy_namespace = deploy_namespace
        self.sync_delay = sync_delay
        self.health_delay = health_delay
        self.stale_health_after_sync = stale_health_after_sync
        self.stale_health_seconds = stale_health_seconds
        self.auto_sync = auto_sync
        self.compare_on_live_change = compare_on_live_change
        self.whole_second_timestamps = whole_second_timestamps
        self.poll_interval = poll_interval
        self.git_timeout = git_timeout
        self.resync_interval = resync_interval

        self.events: list[Event] = []
        self.errors: list[BaseException] = []  # controller-loop failures; should stay empty

        self._fail_next: str | None = None
        self._conditions: list[dict[str, str]] = []
        self._states: dict[tuple[str, str], _AppState] = {}
        # Deployment controller, keyed by (namespace, Deployment name).
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._rollout_due: dict[tuple[str, str], float] = {}  # set by the double's own writes
        self._stalls: dict[tuple[str, str], str | None] = {}  # -> Progressing message (None: default)
        self._crash_loops: dict[tuple[str, str], _CrashLoop] = {}
        # The tick and calls from tests both run the Deployment controller: one at a time.
        self._deploy_lock = asyncio.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._k: kmock.KubernetesEmulator | None = None
        self._url: str | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="argocd-double-"))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> ArgoCDControllerDouble:
        if self._thread is not None:
            raise DoubleError("the double is already started")
        self._thread = threading.Thread(target=self._thread_main, name="argocd-double", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise DoubleError(f"kmock did not start within {timeout}s")
        if self._startup_error is not None:
            raise DoubleError(f"kmock failed to start: {self._startup_error!r}") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and the controller, join the thread, remove the git cache."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise DoubleError(f"the double's thread did not stop within {timeout}s")
        self._thread = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> ArgoCDControllerDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise DoubleError("the double is not started")
        return self._url

    @property
    def emulator(self) -> kmock.KubernetesEmulator:
        """The kmock emulator; touch it only through ``call()`` (it lives in the loop thread)."""
        if self._k is None:
            raise DoubleError("the double is not started")
        return self._k

    def write_kubeconfig(self, path: str | os.PathLike[str], *, context: str = "kmock", namespace: str = "argocd") -> Path:
        """A kubeconfig for ``.url`` with a dummy bearer token (the official client accepts it)."""
        return write_kubeconfig(path, self.url, context=context, namespace=namespace)

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn()`` (sync or returning an awaitable) in the loop thread and return its result."""
        if self._loop is None or self._thread is None:
            raise DoubleError("the double is not started")

        async def runner() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    # -- objects ---------------------------------------------------------------------------

    def create_application(self, manifest: Mapping[str, Any], *, repo_url: str | None = None) -> dict[str, Any]:
        """Store an Application (e.g. loaded from ``application.yaml``); returns it as stored.

        ``repo_url`` replaces ``spec.source.repoURL`` (the committed manifest names the real
        GitLab; tests point it at a local bare repo, a ``file://`` URL or a ``git://`` daemon).
        """
        manifest = copy.deepcopy(dict(manifest))
        if repo_url is not None:
            manifest.setdefault("spec", {}).setdefault("source", {})["repoURL"] = repo_url
        meta = manifest.setdefault("metadata", {})
        if not meta.get("name"):
            raise DoubleError("the Application manifest has no metadata.name")
        meta.setdefault("namespace", "argocd")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", self._now())
        manifest.setdefault("apiVersion", "argoproj.io/v1alpha1")
        manifest.setdefault("kind", "Application")
        ns, name = meta["namespace"], meta["name"]

        async def create() -> None:
            resp = await self.emulator.post(_collection_path(APPLICATIONS, ns), json=manifest)
            text = await resp.text()
            if resp.status >= 300:
                raise DoubleError(f"creating Application {ns}/{name}: HTTP {resp.status} {text}")
            self._states[(ns, name)] = _AppState(compare_requested=True)  # initial comparison

        self.call(create)
        return self.application(name=name, namespace=ns)

    def application(self, name: str | None = None, namespace: str = "argocd") -> dict[str, Any]:
        """The stored Application (the only one if ``name`` is None)."""

        def read() -> dict[str, Any]:
            keys = [key for key in self._app_keys() if key[0] == namespace and (name is None or key[1] == name)]
            if len(keys) != 1:
                raise DoubleError(f"expected one Application in {namespace} named {name or '*'}, found {keys}")
            return copy.deepcopy(self.emulator.objects[_APP_RES, keys[0][0], keys[0][1]].raw)

        return self.call(read)

    def deployments(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Deployment name -> stored object, in ``namespace`` (default: ``deploy_namespace``)."""
        ns = namespace or self.deploy_namespace

        def read() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for (res, obj_ns, obj_name), obj in self.emulator.objects.items():
                if _res_str(res) == DEPLOYMENTS and obj_ns == ns and not obj.deleted:
                    out[obj_name] = copy.deepcopy(obj.raw)
            return dict(sorted(out.items()))

        return self.call(read)

    def live_images(self, namespace: str | None = None) -> dict[str, str]:
        """Deployment name -> first container image."""
        return {name: _first_image(obj) or "" for name, obj in self.deployments(namespace).items()}

    def pods(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Pod name -> stored object, in ``namespace`` (default: ``deploy_namespace``)."""
        ns = namespace or self.deploy_namespace

        def read() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for (res, obj_ns, obj_name), obj in self.emulator.objects.items():
                if _res_str(res) == PODS and obj_ns == ns and not obj.deleted:
                    out[obj_name] = copy.deepcopy(obj.raw)
            return dict(sorted(out.items()))

        return self.call(read)

    def serve_resource(self, resource: str, kind: str, *, namespaced: bool = True) -> None:
        """Serve another kind (``"v1/services"``, ``"monitoring.coreos.com/v1/servicemonitors"``) in
        the API's discovery, so clients that discover kinds (the runbook's diff) can read it."""

        def declare() -> None:
            if resource not in (APPLICATIONS, DEPLOYMENTS, PODS):
                self.emulator.resources[resource] = {
                    "kind": kind, "namespaced": namespaced, "singular": kind.lower(),
                    "verbs": ["get", "list", "watch", "patch", "create", "delete"],
                }

        self.call(declare)

    def put_object(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store any object as the API server would hold it (replacing one of the same name); no
        controller reacts to it (a Deployment of the double replaced this way loses its Pods, as
        a deleted one does). Returns it as stored."""
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        ns, name = meta.setdefault("namespace", self.deploy_namespace), meta["name"]  # namespaced kinds only
        path, collection = _object_path(resource, ns, name), _collection_path(resource, ns)

        async def go() -> dict[str, Any]:
            key = (kmock.resource(resource), ns, name)
            objs = self.emulator.objects
            if key in objs and not objs[key].deleted:
                await self.emulator.delete(path)
            resp = await self.emulator.post(collection, json=body)
            if resp.status >= 300:
                raise DoubleError(f"creating {resource} {ns}/{name}: HTTP {resp.status} {await resp.text()}")
            return copy.deepcopy(self.emulator.objects[key].raw)

        return self.call(go)

    def delete_object(self, resource: str, name: str, *, namespace: str | None = None) -> None:
        """Delete a stored object (someone ran ``kubectl delete``)."""
        ns = namespace or self.deploy_namespace

        async def go() -> None:
            resp = await self.emulator.delete(_object_path(resource, ns, name))
            if resp.status >= 300:
                raise DoubleError(f"deleting {resource} {ns}/{name}: HTTP {resp.status} {await resp.text()}")

        self.call(go)

    # -- behaviour switches ----------------------------------------------------------------

    def fail_next_sync(self, message: str = "one or more objects failed to apply") -> None:
        """The next operation ends with phase Failed and this message (nothing is applied)."""
        self._fail_next = message

    def degrade(self, message: str = "Deployment has exceeded its progress deadline") -> None:
        """Live health becomes Degraded (now, and after later syncs) until ``recover()``."""

        async def go() -> None:
            for key in self._app_keys():
                st = self._state(key)
                st.degraded = message
                await self._patch_app(
                    key, {"status": {"health": {"status": "Degraded", "message": message}, "reconciledAt": self._now()}}
                )
                self._event("health", key, status="Degraded", message=message)

        self.call(go)

    def recover(self) -> None:
        """Undo ``degrade``: health follows the rollout again (Healthy once it is done)."""

        async def go() -> None:
            now = time.monotonic()
            for key in self._app_keys():
                st = self._state(key)
                st.degraded = None
                if st.rollout_done is not None and now < st.rollout_done:
                    st.healthy_at = st.rollout_done  # degrade() cut the wait short; the rollout is not done
                await self._write_health(key)

        self.call(go)

    def add_condition(self, type_: str, message: str) -> None:
        """Report a condition (e.g. ComparisonError) on every Application from now on."""

        async def go() -> None:
            self._conditions.append({"type": type_, "message": message})
            for key in self._app_keys():
                await self._patch_app(key, {"status": {"conditions": self._conditions_now([])}})

        self.call(go)

    def clear_conditions(self) -> None:
        async def go() -> None:
            self._conditions.clear()
            for key in self._app_keys():
                await self._patch_app(key, {"status": {"conditions": None}})

        self.call(go)

    def set_live_image(self, deployment: str, image: str, *, namespace: str | None = None, container: int = 0) -> None:
        """Someone edits a live Deployment (drift); Argo CD notices and re-compares."""
        ns = namespace or self.deploy_namespace

        async def go() -> None:
            key = (_DEPLOY_RES, ns, deployment)
            objs = self.emulator.objects
            if key not in objs or objs[key].deleted:
                raise DoubleError(f"no Deployment {ns}/{deployment}")
            raw = objs[key].raw
            containers = copy.deepcopy(raw["spec"]["template"]["spec"]["containers"])
            containers[container]["image"] = image
            path = _object_path(DEPLOYMENTS, ns, deployment)
            self._rollout_due[(ns, deployment)] = time.monotonic() + self.health_delay
            await self._http_patch(
                path,
                {"metadata": {"generation": _generation(raw) + 1}, "spec": {"template": {"spec": {"containers": containers}}}},
            )
            await self._observe_deployment(ns, deployment, adopt=True)
            self._event("live-edit", None, deployment=f"{ns}/{deployment}", image=image)
            if self.compare_on_live_change:
                for app_key in self._app_keys():
                    self._state(app_key).compare_requested = True

        self.call(go)

    def stall_rollout(self, deployment: str, message: str | None = None, *, namespace: str | None = None) -> None:
        """The Deployment's rollout in progress, or else its next one, never finishes.

        When it would have finished, ``Progressing`` turns False ``ProgressDeadlineExceeded``
        (``message``, default ``ReplicaSet "<name>-<hash>" has timed out progressing.``) and the
        Application Degraded, as after ``progressDeadlineSeconds`` in a cluster. Until
        ``unstall_rollout``.
        """
        ns = namespace or self.deploy_namespace

        def go() -> None:
            self._stalls[(ns, deployment)] = message

        self.call(go)

    def unstall_rollout(self, deployment: str, *, namespace: str | None = None) -> None:
        """Undo ``stall_rollout``: a stalled rollout finishes at the next tick (the Application follows)."""
        ns = namespace or self.deploy_namespace

        def go() -> None:
            self._stalls.pop((ns, deployment), None)

        self.call(go)

    def crash_loop(self, deployment: str, *, every: float = 0.5, namespace: str | None = None) -> None:
        """The Deployment's Pods (and those of later rollouts) restart every ``every`` seconds."""
        if every <= 0:
            raise ValueError("every must be positive")
        ns = namespace or self.deploy_namespace

        def go() -> None:
            self._crash_loops[(ns, deployment)] = _CrashLoop(every=every, next_at=time.monotonic() + every)

        self.call(go)

    def stop_crash_loop(self, deployment: str, *, namespace: str | None = None) -> None:
        """No more restarts; ``restartCount`` keeps its value, as the kubelet's does."""
        ns = namespace or self.deploy_namespace

        def go() -> None:
            self._crash_loops.pop((ns, deployment), None)

        self.call(go)

    # -- events ----------------------------------------------------------------------------

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in list(self.events) if e.kind == kind]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
        """Block until ``predicate()`` is true (for tests); raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- thread / loop ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to start() or kept in errors
            if not self._ready.is_set():
                self._startup_error = e
                self._ready.set()
            else:
                self.errors.append(e)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as k, kmock.Server(k, host="127.0.0.1") as srv:
            k.resources[APPLICATIONS] = {
                "kind": "Application",
                "namespaced": True,
                "singular": "application",
                "shortnames": ["app", "apps"],
                "verbs": ["get", "list", "watch", "patch", "create", "delete"],
            }
            k.resources[DEPLOYMENTS] = {
                "kind": "Deployment",
                "namespaced": True,
                "singular": "deployment",
                "shortnames": ["deploy"],
                "verbs": ["get", "list", "watch", "patch", "create", "delete"],
            }
            k.resources[PODS] = {
                "kind": "Pod",
                "namespaced": True,
                "singular": "pod",
                "shortnames": ["po"],
                "verbs": ["get", "list", "watch", "patch", "create", "delete"],
            }
            self._k = k
            self._url = str(srv.url).rstrip("/")
            self._ready.set()
            while not self._stop.is_set():
                try:
                    await self._tick()
                except Exception as e:  # noqa: BLE001 - keep serving; tests assert errors == []
                    _log.exception("argocd double: controller tick failed")
                    self.errors.append(e)
                try:
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
                except asyncio.TimeoutError:
                    pass

    async def _tick(self) -> None:
        # One clock for the whole tick, Deployments first: a rollout due now is written before an
        # Application whose health waits for the same moment turns Healthy (Argo CD's health
        # is derived from the Deployment's status, so it never leads it).
        now = time.monotonic()
        await self._reconcile_deployments(now)
        for key in self._app_keys():
            await self._reconcile(key, now)

    def _app_keys(self) -> list[tuple[str, str]]:
        keys = []
        for (res, ns, name), obj in self.emulator.objects.items():
            if _res_str(res) == APPLICATIONS and not obj.deleted:
                keys.append((ns or "", name))
        return sorted(keys)

    def _state(self, key: tuple[str, str]) -> _AppState:
        return self._states.setdefault(key, _AppState(compare_requested=True))

    def _read(self, key: tuple[str, str]) -> dict[str, Any] | None:
        obj_key = (_APP_RES, key[0], key[1])
        objs = self.emulator.objects
        if obj_key not in objs or objs[obj_key].deleted:
            return None
        return copy.deepcopy(objs[obj_key].raw)

    # -- controller ------------------------------------------------------------------------

    async def _reconcile(self, key: tuple[str, str], now: float) -> None:
        app = self._read(key)
        if app is None:
            return
        st = self._state(key)

        # Operations first: Argo CD's operation processors run independently of refreshes.
        requested = app.get("operation")
        if st.op is None and requested is not None:
            await self._start_operation(key, app, requested)
            return
        if st.op is not None and now >= st.op.apply_at:
            await self._finish_operation(key, app)
            return

        annotation = ((app.get("metadata") or {}).get("annotations") or {}).get(REFRESH_ANNOTATION)
        if self.resync_interval is not None and now - st.compared_at >= self.resync_interval:
            st.compare_requested = True
        if annotation is not None or st.compare_requested:
            st.compare_requested = False
            st.compared_at = now
            await self._compare(key, app, reason=f"refresh={annotation}" if annotation else "controller", now=now)
            return

        if st.stale_until is not None and now >= st.stale_until:
            st.stale_until = None
            self._event("stale-health", key, ended=True)
            await self._write_health(key, now)
            return
        if st.stale_until is None and st.healthy_at is not None and now >= st.healthy_at:
            st.healthy_at = None
            await self._write_health(key, now)
            return
        if st.health_dirty and st.stale_until is None and st.healthy_at is None:
            await self._write_health(key, now)
            return

    async def _start_operation(self, key: tuple[str, str], app: dict[str, Any], requested: dict[str, Any]) -> None:
        st = self._state(key)
        started = self._now()
        revision = ((requested.get("sync") or {}).get("revision")) or ""
        try:
            if not _SHA_RE.match(revision):
                revision = await self._resolve(app, revision or None)
        except _RenderError as e:
            await self._patch_app(
                key,
                {
                    "operation": None,
                    "status": {
                        "operationState": {
                            "operation": requested,
                            "phase": "Error",
                            "message": str(e),
                            "startedAt": started,
                            "finishedAt": self._now(),
                        }
                    },
                },
            )
            self._event("operation-finished", key, phase="Error", message=str(e))
            return
        st.op = _Operation(spec=requested, revision=revision, started_at=started, apply_at=time.monotonic() + self.sync_delay)
        await self._patch_app(
            key,
            {
                "status": {
                    "operationState": {
                        "operation": requested,
                        "phase": "Running",
                        "message": "one or more tasks are running",
                        "startedAt": started,
                        "syncResult": None,
                        "finishedAt": None,
                    }
                }
            },
        )
        by = (requested.get("initiatedBy") or {}).get("username") or "automated"
        self._event("operation-started", key, revision=revision, initiated_by=by)

    async def _finish_operation(self, key: tuple[str, str], app: dict[str, Any]) -> None:
        st = self._state(key)
        op = st.op
        assert op is not None
        st.op = None
        source = copy.deepcopy((app.get("spec") or {}).get("source") or {})
        status = app.get("status") or {}
        # Clear ``operation`` only if it is still the one we ran (someone may have replaced it).
        clear_op = {"operation": None} if app.get("operation") == op.spec else {}
        op_state: dict[str, Any] = {"operation": op.spec, "startedAt": op.started_at}

        if self._fail_next is not None:
            message, self._fail_next = self._fail_next, None
            op_state.update(phase="Failed", message=message, finishedAt=self._now())
            await self._patch_app(key, {**clear_op, "status": {"operationState": op_state}})
            self._event("operation-finished", key, phase="Failed", revision=op.revision, message=message)
            return
        try:
            desired = await self._desired_images(app, op.revision)
        except _RenderError as e:
            op_state.update(phase="Failed", message=f"ComparisonError: {e}", finishedAt=self._now())
            await self._patch_app(key, {**clear_op, "status": {"operationState": op_state}})
            self._event("operation-finished", key, phase="Failed", revision=op.revision, message=str(e))
            return

        ns = self._destination_namespace(app)
        results = []
        now = time.monotonic()
        # The Deployments finish rolling out when the Application turns Healthy: after the stale
        # window, if there is one.
        stale_for = self.stale_health_seconds if self.stale_health_after_sync else 0.0
        rollout_done = now + stale_for + self.health_delay
        # `argocd app sync --force/--replace`: Replace=true recreates each object from Git, so what
        # was edited live (beyond the image this double renders) is gone afterwards.
        replace = "Replace=true" in ((op.spec.get("sync") or {}).get("syncOptions") or ())
        for deployment, image in desired.items():
            if replace:
                verb = await self._replace_deployment(key, ns, deployment, image, rollout_done)
            else:
                verb = await self._apply_deployment(key, ns, deployment, image, rollout_done)
            results.append(
                {
                    "group": "apps",
                    "version": "v1",
                    "kind": "Deployment",
                    "namespace": ns,
                    "name": deployment,
                    "status": "Synced",
                    "message": f"deployment.apps/{deployment} {verb}",
                    "hookPhase": "Running",
                    "syncPhase": "Sync",
                }
            )
        finished = self._now()
        op_state.update(
            phase="Succeeded",
            message="successfully synced (all tasks run)",
            finishedAt=finished,
            syncResult={"revision": op.revision, "source": source, "resources": results},
        )
        st.history_id += 1
        history = list(status.get("history") or [])
        history.append(
            {
                "id": st.history_id,
                "revision": op.revision,
                "deployStartedAt": op.started_at,
                "deployedAt": finished,
                "source": source,
                "initiatedBy": op.spec.get("initiatedBy") or {},
            }
        )
        limit = (app.get("spec") or {}).get("revisionHistoryLimit", 10)
        new_status: dict[str, Any] = {
            "operationState": op_state,
            "history": history[-limit:] if limit else history,
            "summary": {"images": sorted(set(desired.values()))},
            # The post-sync partial comparison: Synced at the revision just applied.
            "sync": self._sync_block(app, "Synced", op.revision),
            "resources": self._resources_block(ns, desired, desired),
        }
        if self.stale_health_after_sync:
            # Keep health and reconciledAt from the previous comparison (kargo#41).
            st.stale_until = now + self.stale_health_seconds
        else:
            new_status["health"] = {"status": "Progressing", "message": "Waiting for rollout to finish"}
        st.healthy_at = st.rollout_done = rollout_done
        if st.degraded is not None:
            st.healthy_at = now  # the rollout "ends" Degraded
        await self._patch_app(key, {**clear_op, "status": new_status})
        self._event("operation-finished", key, phase="Succeeded", revision=op.revision, finished_at=finished)
        if self.stale_health_after_sync:
            self._event("stale-health", key, ended=False, health=(status.get("health") or {}).get("status"))

    async def _compare(self, key: tuple[str, str], app: dict[str, Any], *, reason: str, now: float) -> None:
        """A refresh: resolve, compare desired vs live, write the verdict, drop the annotation."""
        st = self._state(key)
        patch: dict[str, Any] = {"metadata": {"annotations": {REFRESH_ANNOTATION: None}}}
        try:
            revision = await self._resolve(app, None)
            desired = await self._desired_images(app, revision)
        except _RenderError as e:
            patch["status"] = {
                "sync": {**self._sync_block(app, "Unknown", None), "revision": None},
                "conditions": self._conditions_now([{"type": "ComparisonError", "message": str(e)}]),
                "reconciledAt": self._now(),
            }
            await self._patch_app(key, patch)
            self._event("refresh", key, reason=reason, error=str(e))
            return
        ns = self._destination_namespace(app)
        live = self._live_images(ns)
        synced = all(live.get(d) == image for d, image in desired.items())
        st.stale_until = None  # a fresh comparison replaces stale health
        st.health_dirty = False
        health, message = self._health_now(key, ns, desired, now)
        patch["status"] = {
            "sync": self._sync_block(app, "Synced" if synced else "OutOfSync", revision),
            "resources": self._resources_block(ns, desired, live),
            "health": {"status": health, "message": message},
            "conditions": self._conditions_now([]),
            "reconciledAt": self._now(),
        }
        await self._patch_app(key, patch)
        self._event("refresh", key, reason=reason, revision=revision, synced=synced, health=health)
        automated = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
        if (
            self.auto_sync
            and automated is not None
            and not synced
            and revision not in st.auto_synced
            and st.op is None
            and app.get("operation") is None
        ):
            st.auto_synced.add(revision)
            await self._patch_app(
                key, {"operation": {"initiatedBy": {"automated": True}, "sync": {"revision": revision}}}
            )
            self._event("auto-sync", key, revision=revision)

    async def _write_health(self, key: tuple[str, str], now: float | None = None) -> None:
        """Write the current health; ``now`` is the tick's clock (outside a tick: bring the
        Deployments up to date first, so health never runs ahead of them)."""
        if now is None:
            now = time.monotonic()
            await self._reconcile_deployments(now)
        app = self._read(key)
        if app is None:
            return
        self._state(key).health_dirty = False
        ns = self._destination_namespace(app)
        try:
            desired = await self._desired_images(app, ((app.get("status") or {}).get("sync") or {}).get("revision"))
        except _RenderError:
            desired = {}
        health, message = self._health_now(key, ns, desired, now)
        await self._patch_app(key, {"status": {"health": {"status": health, "message": message}, "reconciledAt": self._now()}})
        self._event("health", key, status=health)

    def _health_now(
        self, key: tuple[str, str], ns: str, desired: Mapping[str, str], now: float
    ) -> tuple[str, str | None]:
        st = self._state(key)
        live = self._live_images(ns)
        if st.degraded is not None:
            return "Degraded", st.degraded
        # Argo CD's Deployment health: Degraded on ProgressDeadlineExceeded (worse than Missing).
        for deployment in sorted(desired):
            rollout = self._rollouts.get((ns, deployment))
            if rollout is not None and rollout.exceeded:
                return "Degraded", f'Deployment "{deployment}" exceeded its progress deadline'
        if any(d not in live for d in desired) or not live:
            return "Missing", None
        if st.healthy_at is not None and now < st.healthy_at:
            return "Progressing", "Waiting for rollout to finish"
        return "Healthy", None

    # -- git / values ----------------------------------------------------------------------

    async def _resolve(self, app: Mapping[str, Any], revision: str | None) -> str:
        source = (app.get("spec") or {}).get("source") or {}
        repo = source.get("repoURL")
        target = revision or source.get("targetRevision") or "HEAD"
        if not repo:
            raise _RenderError("spec.source.repoURL is empty")
        if _SHA_RE.match(target):
            return target
        out = await self._git("ls-remote", repo, cwd=None)
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            refs[ref] = sha
        for candidate in (target, f"refs/heads/{target}", f"refs/tags/{target}^{{}}", f"refs/tags/{target}"):
            if candidate in refs:
                return refs[candidate]
        raise _RenderError(f"unable to resolve '{target}' to a commit SHA in {repo}")

    async def _desired_images(self, app: Mapping[str, Any], revision: str | None) -> dict[str, str]:
        """Deployment name -> image, from the values file at ``revision`` (+ helm.parameters)."""
        if not revision:
            return {}
        source = (app.get("spec") or {}).get("source") or {}
        helm = source.get("helm") or {}
        value_files = helm.get("valueFiles") or ["values.yaml"]
        path = "/".join(p for p in ((source.get("path") or "").strip("/"), value_files[0]) if p)
        text = await self._show(source.get("repoURL") or "", revision, path)
        try:
            values = YAML(typ="safe").load(text) or {}
        except Exception as e:  # noqa: BLE001 - any YAML error is a render error
            raise _RenderError(f"{path} at {revision[:12]}: invalid YAML: {e}") from e
        for param in helm.get("parameters") or ():
            _set_path(values, str(param.get("name", "")), param.get("value"))
        images: dict[str, str] = {}
        app_version: str | None = None
        for values_key, deployment in self.image_values.items():
            parent = _get_path(values, values_key.rpartition(".")[0]) if "." in values_key else values
            if isinstance(parent, Mapping) and parent.get("enabled") is False:
                continue  # the chart's `{{- if .Values.<app>.enabled }}`: not rendered at all
            block = _get_path(values, values_key)
            if isinstance(block, str) and block:
                images[deployment] = block
                continue
            if not isinstance(block, Mapping) or not block.get("repository"):
                raise _RenderError(f"{path} at {revision[:12]}: {values_key}.repository must not be empty")
            tag = block.get("tag")
            if tag in (None, ""):
                # Helm convention (and the chart's coelho-realtime.imageTag): fall back to appVersion.
                if app_version is None:
                    app_version = await self._app_version(source, revision)
                if not app_version:
                    raise _RenderError(
                        f"{values_key}.tag is empty and the chart has no appVersion to fall back to"
                    )
                tag = app_version
            images[deployment] = f"{block['repository']}:{tag}"
        return images

    async def _app_version(self, source: Mapping[str, Any], revision: str) -> str:
        chart = "/".join(p for p in ((source.get("path") or "").strip("/"), "Chart.yaml") if p)
        try:
            text = await self._show(source.get("repoURL") or "", revision, chart)
        except _RenderError:
            return ""
        data = YAML(typ="safe").load(text) or {}
        return str(data.get("appVersion") or "") if isinstance(data, Mapping) else ""

    async def _show(self, repo: str, revision: str, path: str) -> str:
        cache = self._workdir / hashlib.sha256(repo.encode()).hexdigest()[:16]
        if not cache.exists():
            await self._git("init", "--bare", "--quiet", str(cache), cwd=None)
        try:
            await self._git("cat-file", "-e", f"{revision}^{{commit}}", cwd=cache)
        except _RenderError:
            await self._git(
                "fetch", "--quiet", "--prune", repo, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", cwd=cache
            )
        try:
            return await self._git("show", f"{revision}:{path}", cwd=cache)
        except _RenderError as e:
            raise _RenderError(f"cannot read {path} at {revision[:12]} from {repo}: {e}") from e

    async def _git(self, *args: str, cwd: Path | None) -> str:
        cmd = ["git", *(["--git-dir", str(cwd)] if cwd else []), *args]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.git_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise _RenderError(f"git {args[0]} timed out after {self.git_timeout}s") from None
        if proc.returncode != 0:
            raise _RenderError(f"git {args[0]} failed: {err.decode(errors='replace').strip()}")
        return out.decode()

    # -- writes ----------------------------------------------------------------------------

    async def _apply_deployment(self, key: tuple[str, str], ns: str, name: str, image: str, done_at: float) -> str:
        """Create or update one Deployment; a change starts a rollout that finishes at ``done_at``."""
        objs = self.emulator.objects
        obj_key = (_DEPLOY_RES, ns, name)
        app_name = key[1]
        component = name[len(app_name) + 1 :] if name.startswith(app_name + "-") else name
        if obj_key in objs and not objs[obj_key].deleted:
            raw = objs[obj_key].raw
            containers = copy.deepcopy(raw["spec"]["template"]["spec"]["containers"])
            if containers[0].get("image") == image:
                return "unchanged"
            containers[0]["image"] = image
            self._rollout_due[(ns, name)] = done_at
            await self._http_patch(
                _object_path(DEPLOYMENTS, ns, name),
                # The API server bumps generation in the same write as the spec change.
                {"metadata": {"generation": _generation(raw) + 1}, "spec": {"template": {"spec": {"containers": containers}}}},
            )
            await self._observe_deployment(ns, name, adopt=True)
            return "configured"
        labels = {
            "app.kubernetes.io/instance": app_name,  # Argo CD's default tracking label
            "app.kubernetes.io/name": app_name,
            "app.kubernetes.io/component": component,
        }
        selector = {"app.kubernetes.io/instance": app_name, "app.kubernetes.io/component": component}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": _kube_time(),
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": component, "image": image}]},
                },
            },
        }
        self._rollout_due[(ns, name)] = done_at
        resp = await self.emulator.post(_collection_path(DEPLOYMENTS, ns), json=body)
        text = await resp.text()
        if resp.status >= 300:
            raise DoubleError(f"creating Deployment {ns}/{name}: HTTP {resp.status} {text}")
        await self._observe_deployment(ns, name, adopt=True)
        return "created"

    async def _replace_deployment(self, key: tuple[str, str], ns: str, name: str, image: str, done_at: float) -> str:
        # Deleted and created again: a new object (generation 1, new uid), its old Pods go with it.
        objs = self.emulator.objects
        if (_DEPLOY_RES, ns, name) in objs and not objs[_DEPLOY_RES, ns, name].deleted:
            resp = await self.emulator.delete(_object_path(DEPLOYMENTS, ns, name))
            if resp.status >= 300:
                raise DoubleError(f"deleting Deployment {ns}/{name}: HTTP {resp.status} {await resp.text()}")
        await self._apply_deployment(key, ns, name, image, done_at)
        return "replaced"

    # -- Deployment / ReplicaSet controllers and kubelet -----------------------------------

    async def _reconcile_deployments(self, now: float) -> None:
        async with self._deploy_lock:
            for ns, name in list(self._rollouts):
                await self._reconcile_deployment(ns, name, now, adopt=False)

    async def _observe_deployment(self, ns: str, name: str, *, adopt: bool) -> None:
        """Right after the double wrote a Deployment: start its rollout now, not a tick later."""
        async with self._deploy_lock:
            await self._reconcile_deployment(ns, name, time.monotonic(), adopt=adopt)

    async def _reconcile_deployment(self, ns: str, name: str, now: float, *, adopt: bool) -> None:
        """One pass of the controllers over one Deployment; writes only when something changes.

        ``adopt``: take over a Deployment not tracked yet (the double just wrote it); otherwise
        untracked ones (``put_object``) are left as they are.
        """
        key = (ns, name)
        objs = self.emulator.objects
        obj_key = (_DEPLOY_RES, ns, name)
        obj = objs[obj_key].raw if obj_key in objs and not objs[obj_key].deleted else None
        meta = (obj or {}).get("metadata") or {}
        rollout = self._rollouts.get(key)
        if rollout is not None and (obj is None or meta.get("uid") != rollout.uid):
            # Deleted, or replaced by another object: the garbage collector takes its Pods.
            await self._delete_pods(ns, list(rollout.pods))
            del self._rollouts[key]
            self._event("rollout", None, deployment=f"{ns}/{name}", phase="deleted")
            rollout = None
        if obj is None:
            return
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        if not _containers(template):
            return  # nothing a ReplicaSet could run
        digest = _digest(spec)
        generation = _generation(obj)
        changed = health_changed = False

        if rollout is None:
            if not adopt:
                return
            if generation < 1:  # written without one: the API server starts at 1
                generation = 1
                await self._http_patch(_object_path(DEPLOYMENTS, ns, name), {"metadata": {"generation": 1}})
            rollout = _Rollout(
                uid=meta.get("uid"),
                generation=generation,
                spec_digest=digest,
                template_hash=_template_hash(template),
                replicas=_replicas(spec),
                done_at=self._rollout_due.pop(key, None) or now + self.health_delay,
            )
            self._rollouts[key] = rollout
            self._event("rollout", None, deployment=f"{ns}/{name}", phase="started", generation=generation)
            changed = True
        elif digest != rollout.spec_digest:
            if generation <= rollout.generation:
                # Someone else changed the spec through kmock, which does not bump generation.
                generation = rollout.generation + 1
                await self._http_patch(_object_path(DEPLOYMENTS, ns, name), {"metadata": {"generation": generation}})
            template_hash, replicas = _template_hash(template), _replicas(spec)
            due = self._rollout_due.pop(key, None)
            if template_hash != rollout.template_hash or replicas != rollout.replicas:
                health_changed = rollout.exceeded
                rollout.template_hash, rollout.replicas = template_hash, replicas
                rollout.done_at, rollout.exceeded = due or now + self.health_delay, False
                self._event("rollout", None, deployment=f"{ns}/{name}", phase="started", generation=generation)
            rollout.generation, rollout.spec_digest = generation, digest
            changed = True

        gone = [p for p in rollout.pods if (_POD_RES, ns, p) not in objs or objs[_POD_RES, ns, p].deleted]
        for pod in gone:
            del rollout.pods[pod]
        changed = changed or bool(gone)

        if rollout.done_at is not None and now >= rollout.done_at:
            if key in self._stalls:
                if not rollout.exceeded:
                    rollout.exceeded = changed = health_changed = True
                    self._event("rollout", None, deployment=f"{ns}/{name}", phase="deadline-exceeded")
            else:
                await self._sync_pods(ns, name, rollout, obj)
                health_changed = health_changed or rollout.exceeded
                rollout.done_at, rollout.exceeded, changed = None, False, True
                self._event("rollout", None, deployment=f"{ns}/{name}", phase="complete", generation=generation)
        elif rollout.done_at is None and gone:
            await self._sync_pods(ns, name, rollout, obj)  # the ReplicaSet replaces deleted Pods

        loop = self._crash_loops.get(key)
        if loop is not None and now >= loop.next_at:
            loop.next_at = now + loop.every
            for pod in list(rollout.pods):
                await self._restart_first_container(ns, pod)

        if changed:
            await self._http_patch(
                _object_path(DEPLOYMENTS, ns, name), {"status": self._deployment_status(ns, name, spec, rollout)}
            )
        if health_changed:
            self._mark_health_dirty(ns)

    def _deployment_status(self, ns: str, name: str, spec: Mapping[str, Any], rollout: _Rollout) -> dict[str, Any]:
        """``status`` as the Deployment controller computes it from its ReplicaSets' Pods."""
        now = _kube_time()
        want = rollout.replicas
        rs_name = f"{name}-{rollout.template_hash}"
        total = len(rollout.pods)
        updated = sum(1 for h in rollout.pods.values() if h == rollout.template_hash)
        available = total  # the double's Pods are ready at once and stay ready (minReadySeconds 0)
        if rollout.done_at is None:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif rollout.exceeded:
            message = self._stalls.get((ns, name)) or f'ReplicaSet "{rs_name}" has timed out progressing.'
            progressing = ("False", "ProgressDeadlineExceeded", message)
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        if available >= want - _max_unavailable(spec, want):
            availability = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            availability = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        conditions = [
            self._deployment_condition(rollout, "Available", *availability, now),
            self._deployment_condition(rollout, "Progressing", *progressing, now),
        ]
        # The API omits zero counts (omitempty); a merge-patch null removes a count that fell to 0.
        return {
            "observedGeneration": rollout.generation,
            "replicas": total or None,
            "updatedReplicas": updated or None,
            "readyReplicas": available or None,
            "availableReplicas": available or None,
            # Desired replicas of all ReplicaSets (the new one at full size) minus available.
            "unavailableReplicas": max(want + (total - updated) - available, 0) or None,
            "conditions": conditions,
        }

    def _deployment_condition(
        self, rollout: _Rollout, type_: str, status: str, reason: str, message: str, now: str
    ) -> dict[str, str]:
        previous = rollout.conditions.get(type_)
        condition = {
            "type": type_,
            "status": status,
            "lastUpdateTime": now,
            # Moves only when the status flips, as in the Deployment controller.
            "lastTransitionTime": previous["lastTransitionTime"] if previous and previous["status"] == status else now,
            "reason": reason,
            "message": message,
        }
        rollout.conditions[type_] = condition
        return condition

    async def _sync_pods(self, ns: str, name: str, rollout: _Rollout, deployment: Mapping[str, Any]) -> None:
        """The ReplicaSets settle: ``replicas`` Pods of the new template, nothing else."""
        keep = [p for p, h in rollout.pods.items() if h == rollout.template_hash][: rollout.replicas]
        # New Pods before the old ones go (a rolling update never drops to zero).
        while len(keep) < rollout.replicas:
            pod = await self._create_pod(ns, name, rollout, deployment)
            rollout.pods[pod] = rollout.template_hash
            keep.append(pod)
        drop = [p for p in rollout.pods if p not in keep]
        await self._delete_pods(ns, drop)
        for pod in drop:
            del rollout.pods[pod]

    async def _create_pod(self, ns: str, name: str, rollout: _Rollout, deployment: Mapping[str, Any]) -> str:
        template = (deployment.get("spec") or {}).get("template") or {}
        pod_hash = rollout.template_hash
        pod_name = f"{name}-{pod_hash}-{_encode(uuid.uuid4().int, 5)}"
        started = _kube_time()
        containers = copy.deepcopy(_containers(template))
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "generateName": f"{name}-{pod_hash}-",
                "namespace": ns,
                "labels": {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod_hash},
                "uid": str(uuid.uuid4()),
                "creationTimestamp": started,
                # The ReplicaSet itself is not stored; its name and a stable uid are enough to group Pods.
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{pod_hash}",
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{rollout.uid}/{pod_hash}")),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**copy.deepcopy(template.get("spec") or {}), "containers": containers, "nodeName": "kmock"},
            "status": {
                "phase": "Running",
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                # imageID is required by the official client's model; the digest is made up.
                "containerStatuses": [
                    {
                        "name": c.get("name") or f"container-{i}",
                        "image": c.get("image") or "",
                        "imageID": _image_id(c.get("image") or ""),
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                    for i, c in enumerate(containers)
                ],
            },
        }
        resp = await self.emulator.post(_collection_path(PODS, ns), json=body)
        if resp.status >= 300:
            raise DoubleError(f"creating Pod {ns}/{pod_name}: HTTP {resp.status} {await resp.text()}")
        return pod_name

    async def _delete_pods(self, ns: str, names: Iterable[str]) -> None:
        objs = self.emulator.objects
        for pod in names:
            if (_POD_RES, ns, pod) in objs and not objs[_POD_RES, ns, pod].deleted:
                resp = await self.emulator.delete(_object_path(PODS, ns, pod))
                if resp.status >= 300 and resp.status != 404:
                    raise DoubleError(f"deleting Pod {ns}/{pod}: HTTP {resp.status} {await resp.text()}")

    async def _restart_first_container(self, ns: str, pod: str) -> None:
        objs = self.emulator.objects
        if (_POD_RES, ns, pod) not in objs or objs[_POD_RES, ns, pod].deleted:
            return
        statuses = copy.deepcopy((objs[_POD_RES, ns, pod].raw.get("status") or {}).get("containerStatuses") or [])
        if not statuses:
            return
        now = _kube_time()
        first = statuses[0]
        started = ((first.get("state") or {}).get("running") or {}).get("startedAt") or now
        first["restartCount"] = int(first.get("restartCount") or 0) + 1
        first["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": now}}
        first["state"] = {"running": {"startedAt": now}}
        await self._http_patch(_object_path(PODS, ns, pod), {"status": {"containerStatuses": statuses}})

    def _mark_health_dirty(self, ns: str) -> None:
        """Applications deploying to ``ns`` write their health again (Argo CD watches its resources)."""
        for key in self._app_keys():
            app = self._read(key)
            if app is not None and self._destination_namespace(app) == ns:
                self._state(key).health_dirty = True

    # -- API writes ------------------------------------------------------------------------

    async def _patch_app(self, key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        await self._http_patch(_object_path(APPLICATIONS, key[0], key[1]), patch)

    async def _http_patch(self, path: str, patch: Mapping[str, Any]) -> None:
        resp = await self.emulator.patch(
            path, data=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
        )
        text = await resp.text()
        if resp.status >= 300:
            raise DoubleError(f"PATCH {path}: HTTP {resp.status} {text}")

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> str:
        now = datetime.now(timezone.utc)
        if self.whole_second_timestamps:
            return now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _event(self, kind: str, key: tuple[str, str] | None, **detail: Any) -> None:
        app = f"{key[0]}/{key[1]}" if key else ""
        self.events.append(Event(at=time.monotonic(), kind=kind, app=app, detail=detail))

    def _destination_namespace(self, app: Mapping[str, Any]) -> str:
        return ((app.get("spec") or {}).get("destination") or {}).get("namespace") or self.deploy_namespace

    def _live_images(self, ns: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for (res, obj_ns, name), obj in self.emulator.objects.items():
            if _res_str(res) == DEPLOYMENTS and obj_ns == ns and not obj.deleted:
                out[name] = _first_image(obj.raw) or ""
        return out

    def _sync_block(self, app: Mapping[str, Any], status: str, revision: str | None) -> dict[str, Any]:
        spec = app.get("spec") or {}
        return {
            "status": status,
            "revision": revision,
            "comparedTo": {"source": copy.deepcopy(spec.get("source") or {}), "destination": copy.deepcopy(spec.get("destination") or {})},
        }

    def _resources_block(self, ns: str, desired: Mapping[str, str], live: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "group": "apps",
                "version": "v1",
                "kind": "Deployment",
                "namespace": ns,
                "name": deployment,
                "status": "Synced" if live.get(deployment) == image else "OutOfSync",
            }
            for deployment, image in sorted(desired.items())
        ]

    def _conditions_now(self, extra: list[dict[str, str]]) -> list[dict[str, str]] | None:
        conditions = [{**c, "lastTransitionTime": self._now()} for c in [*self._conditions, *extra]]
        return conditions or None


def _res_str(res: Any) -> str:
    return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"


def _collection_path(resource: str, namespace: str) -> str:
    group_version, _, plural = resource.rpartition("/")
    prefix = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def _object_path(resource: str, namespace: str, name: str) -> str:
    return f"{_collection_path(resource, namespace)}/{name}"


def _generation(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("generation") or 0)
    except (TypeError, ValueError):
        return 0


def _containers(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    containers = (template.get("spec") or {}).get("containers") if isinstance(template, Mapping) else None
    return [c for c in containers if isinstance(c, dict)] if isinstance(containers, list) else []


def _replicas(spec: Mapping[str, Any]) -> int:
    value = spec.get("replicas")
    return 1 if value is None else max(int(value), 0)  # the API server's default is 1


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _encode(number: int, length: int) -> str:
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(_NAME_ALPHABET))
        out.append(_NAME_ALPHABET[digit])
    return "".join(out)


def _template_hash(template: Mapping[str, Any]) -> str:
    """A pod-template-hash: stable for a template, 10 characters of the generated-name alphabet."""
    return _encode(int(_digest(template), 16), 10)


def _max_unavailable(spec: Mapping[str, Any], replicas: int) -> int:
    """RollingUpdate's maxUnavailable resolved against ``replicas`` (defaults 25%/25%)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    rolling = strategy.get("rollingUpdate") or {}

    def resolve(value: Any, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            exact = int(value[:-1]) * replicas / 100
            return int(-(-exact // 1)) if round_up else int(exact // 1)
        return int(value)

    surge = resolve(rolling.get("maxSurge", "25%"), round_up=True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # both zero would deadlock; Kubernetes allows one unavailable
    return min(unavailable, replicas)


def _kube_time() -> str:
    # metav1.Time: whole seconds, UTC.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_id(image: str) -> str:
    """What the kubelet reports as imageID: ``repository@sha256:<digest>`` (the digest is made up)."""
    if "@" in image:
        return image
    repository, _, last = image.rpartition("/")
    name = last.partition(":")[0]
    return f"{repository + '/' if repository else ''}{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _first_image(obj: Mapping[str, Any]) -> str | None:
    containers = ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    return containers[0].get("image") if containers else None


def _get_path(values: Any, dotted: str) -> Any:
    node = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    if not dotted:
        return
    parts = dotted.split(".")
    node = values
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# Label selectors: kmock ignores them, so tests apply them to what it answers, as an apiserver would
# ---------------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


@dataclass(frozen=True)
class LabelSelector:
    """A parsed Kubernetes label selector (equality- and set-based), matched client-side."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...]  # (key, op, values)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        reqs: list[tuple[str, str, frozenset[str]]] = []
        for term in _split_terms(text):
            if m := _SET_RE.match(term):
                values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
                reqs.append((m.group(1), m.group(2), values))
            elif m := _EQ_RE.match(term):
                reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset({m.group(3)})))
            elif m := _EXISTS_RE.match(term):
                reqs.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
            else:
                raise ValueError(f"invalid label selector term {term!r} in {text!r}")
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.requirements:
            present = key in labels
            value = labels.get(key)
            ok = {
                "=": present and value in values,
                "!=": not present or value not in values,
                "in": present and value in values,
                "notin": not present or value not in values,
                "exists": present,
                "!exists": not present,
            }[op]
            if not ok:
                return False
        return True


def _split_terms(text: str) -> Iterable[str]:
    depth, current = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            yield "".join(current)
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        yield "".join(current)
