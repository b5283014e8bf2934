"""TEST DOUBLE of the Kubernetes Job controller and the kubelet, over a Kubernetes API (kmock).

This is not Kubernetes. It lets a real ``K8sRunLauncher`` (dagster-k8s) launch real runs in tests:
the launcher creates ``batch/v1`` Jobs through the API, this double runs each Job's container
command as a local process and writes the statuses the launcher's run monitoring reads. It talks to
the API over HTTP as the real components do (its requests carry the token ``kubelet-double``), and
polls every ``poll_interval`` seconds (kmock's watches never end, environment.md §8).

For every Job that appears in one of its namespaces, once:

* **the Job controller's part:** the Pod's ServiceAccount must exist (else no Pod, problem
  ``FailedCreate``, as the ServiceAccount admission refuses it); a Pod ``<job>-<5 chars>`` is created
  from the template (labels ``job-name``, ``controller-uid``, …, an owner reference), Pending. While
  it runs: Job ``status.active: 1`` and ``startTime``. When its process ends: ``succeeded: 1`` with
  conditions ``SuccessCriteriaMet`` + ``Complete``, or ``failed: 1`` with ``FailureTarget`` +
  ``Failed`` (reason ``BackoffLimitExceeded``), ``active`` removed, ``completionTime``. A Job
  deleted while its process runs (Dagster's terminate) has it stopped: SIGTERM to its process
  group, SIGKILL after ``grace_seconds`` (its Pod object stays in the API).
* **the kubelet's part:**

  - environment, as the kubelet builds it: ``envFrom`` (``configMapRef``/``secretRef``, ``prefix``,
    ``optional``) first, then ``env`` (``value``; ``valueFrom`` ``secretKeyRef``/``configMapKeyRef``
    with ``optional``, ``fieldRef`` ``metadata.name``/``metadata.namespace``/
    ``spec.serviceAccountName``), later entries winning. Secret ``data`` is base64-decoded; its
    ``stringData`` is read too (kmock does not fold it into ``data`` as an API server would). A
    missing non-optional Secret, ConfigMap or key leaves the Pod Pending, ``CreateContainerConfigError``
    (the double does not retry it later, as a kubelet would: create what a Pod needs first).
    ``$(VAR)`` references are not expanded.
  - volumes, materialized at each ``volumeMount``'s ``mountPath`` (with ``subPath``): ``configMap``
    and ``secret`` (``items``, ``defaultMode``, ``optional``) and ``emptyDir`` fresh per Pod;
    ``persistentVolumeClaim`` a directory per claim that outlives Pods (the claim must exist in the
    API, else ``FailedMount``). A mount is a symlink into the double's state directory. The process
    shares this host's filesystem, so every ``mountPath`` must lie under ``root`` (the test maps the
    image's paths there) and not be in use by another running Pod; directories above a mount are
    created. ``readOnly`` is not enforced.
  - the ServiceAccount: instead of a token file at ``/var/run/secrets/kubernetes.io/serviceaccount``
    (a fixed path of this host), a kubeconfig for the API with the token
    ``kubelet-double-sa:<namespace>:<name>`` is written and named by ``KUBECONFIG`` (unless
    ``automountServiceAccountToken`` is false); the API's request log then tells what each
    ServiceAccount called. ``KUBERNETES_SERVICE_HOST``/``_PORT`` and ``HOSTNAME`` are set as the kubelet
    sets them.
  - the container: ``argv`` follows Kubernetes' rule over the image's entrypoint and cmd
    (:class:`ImageConfig`: ``command`` replaces the entrypoint and drops the cmd, ``args`` replace the
    cmd); the process gets the image's ``env`` plus the above and nothing of the test process's
    environment, runs in the image's ``workdir`` (created under ``root``), in its own process group,
    output to a log file per Pod. Pod status: Running with a ready container, then Succeeded/Failed
    with ``state.terminated.exitCode``; an executable that is not found ends it with 127.

Not emulated: images (the command runs on this host with its tools; only :class:`ImageConfig`
stands for the image), init containers (a Pod with one stays Pending: "not emulated") except native
sidecars (``restartPolicy: Always``), which are recorded in ``PodRecord.sidecars`` and not run (what
they forward or serve must already be on this host), more than one container, resources, probes, security contexts (the process runs as the test's
user), ``backoffLimit`` retries (one Pod per Job), parallelism, ``activeDeadlineSeconds``, TTL,
scheduling, networking (the process shares this host's loopback), the Pod's own deletion.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from argocd_double import write_kubeconfig

TOKEN = "kubelet-double"  # noqa: S105 - not a credential; kmock accepts any token
SA_TOKEN_PREFIX = "kubelet-double-sa:"  # noqa: S105 - likewise
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_TIMEOUT = (5, 15)

_log = logging.getLogger(__name__)


class KubeletDoubleError(RuntimeError):
    """The double itself failed (start, stop, an unexpected API answer)."""


class _PodProblem(Exception):
    """Why a Pod cannot start; ``reason`` is what Kubernetes would report."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class ImageConfig:
    """What the double knows of the Job's image: what its Dockerfile's ENTRYPOINT, CMD, ENV and
    WORKDIR say."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"


@dataclass
class PodRecord:
    """A Pod the double ran (or could not start), for assertions."""

    namespace: str
    name: str
    job: str
    job_object: dict[str, Any]  # the Job as the launcher created it
    service_account: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # in memory only: it holds the Secrets' values
    log_path: Path | None = None
    exit_code: int | None = None
    problem: str | None = None
    sidecars: list[str] = field(default_factory=list)  # native sidecars: recorded, not run
    process: subprocess.Popen | None = field(default=None, repr=False)
    mounts: list[Path] = field(default_factory=list, repr=False)


class KubeletDouble:
    """TEST DOUBLE of the Job controller and the kubelet (see the module docstring).

    Args:
        api_url: the Kubernetes API (kmock's URL).
        root: the directory every ``mountPath`` and the image's ``workdir`` must lie under.
        image: the image of every Job's container.
        namespaces: where to look for Jobs.
        poll_interval: seconds between two looks at the Jobs and the processes.
        grace_seconds: SIGTERM to SIGKILL, when a Job is deleted or the double stops.
    """

    def __init__(self, api_url: str, root: Path, *, image: ImageConfig, namespaces: Sequence[str] = ("default",),
                 poll_interval: float = 0.2, grace_seconds: float = 20.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.root = root.resolve()
        self.image = image
        self.namespaces = tuple(namespaces)
        self.poll_interval = poll_interval
        self.grace_seconds = grace_seconds
        self.pods: dict[tuple[str, str], PodRecord] = {}  # (namespace, Job name) -> its Pod
        self.errors: list[BaseException] = []  # failures of the double's own loop; should stay empty
        self._state = self.root / ".kubelet-double"
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {TOKEN}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> KubeletDouble:
        if self._thread is not None:
            raise KubeletDoubleError("the kubelet double is already started")
        self._state.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name="kubelet-double", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the loop, then every process still running (by its process group), and unmounts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise KubeletDoubleError(f"the kubelet double's thread did not stop within {timeout}s")
        self._thread = None
        for pod in list(self.pods.values()):
            if pod.process is not None and pod.process.poll() is None:
                self._terminate(pod)
            self._unmount(pod)
        self._http.close()

    def __enter__(self) -> KubeletDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_pod(self, namespace: str, job: str, *, ended: bool = False, timeout: float = 60.0) -> PodRecord:
        """The Pod of Job ``namespace/job`` once the double has taken the Job up (``ended``: once its
        process has ended too, or it could not start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pod = self.pods.get((namespace, job))
            if pod is not None and (not ended or pod.exit_code is not None or pod.problem is not None):
                return pod
            time.sleep(0.1)
        raise KubeletDoubleError(f"no {'ended ' if ended else ''}Pod for Job {namespace}/{job} after {timeout:g}s")

    def kill(self, namespace: str, job: str, sig: int = signal.SIGKILL) -> None:
        """Kills the container of Job ``namespace/job`` (its whole process group), as an OOM kill or a
        lost node would; the Job then fails as the Job controller records it."""
        pod = self.wait_for_pod(namespace, job)
        if pod.process is None or pod.process.poll() is not None:
            raise KubeletDoubleError(f"Job {namespace}/{job} has no running process to kill")
        _signal_group(pod.process.pid, sig)

    # -- the loop --------------------------------------------------------------------------

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - keep going; tests assert errors == []
                _log.exception("kubelet double: tick failed")
                self.errors.append(e)
            self._stop.wait(self.poll_interval)

    def _tick(self) -> None:
        for namespace in self.namespaces:
            listed = self._get(f"/apis/batch/v1/namespaces/{namespace}/jobs") or {}
            present = set()
            for job in listed.get("items") or ():
                name = (job.get("metadata") or {}).get("name")
                if not name:
                    continue
                present.add(name)
                if (namespace, name) not in self.pods:
                    pod = self._start(namespace, name, job)
                    with self._lock:
                        self.pods[(namespace, name)] = pod
            for (ns, name), pod in list(self.pods.items()):
                if ns != namespace or pod.process is None or pod.exit_code is not None:
                    continue
                if name not in present:  # deleted while running: its process goes with it
                    self._terminate(pod)
                    pod.exit_code = _exit_code(pod.process.returncode)
                    self._unmount(pod)
                elif pod.process.poll() is not None:
                    self._finish(pod, _exit_code(pod.process.returncode))

    # -- the Job controller ----------------------------------------------------------------

    def _start(self, namespace: str, job_name: str, job: dict[str, Any]) -> PodRecord:
        template = (job.get("spec") or {}).get("template") or {}
        spec = template.get("spec") or {}
        sa = spec.get("serviceAccountName") or "default"
        pod = PodRecord(namespace=namespace, name=f"{job_name}-{''.join(random.choices(_NAME_ALPHABET, k=5))}",
                        job=job_name, job_object=json.loads(json.dumps(job)), service_account=sa)
        if self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{quote(sa)}") is None:
            pod.problem = f'FailedCreate: pods "{pod.name}" is forbidden: serviceaccount "{sa}" not found'
            return pod
        uid = (job.get("metadata") or {}).get("uid") or str(uuid.uuid4())
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), "job-name": job_name, "controller-uid": uid,
                  "batch.kubernetes.io/job-name": job_name, "batch.kubernetes.io/controller-uid": uid}
        self._post(f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": namespace, "labels": labels, "uid": str(uuid.uuid4()),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {**spec, "nodeName": "kubelet-double"},
            "status": {"phase": "Pending"},
        })
        try:
            self._run(pod, spec)
        except _PodProblem as problem:
            pod.problem = str(problem)
            self._unmount(pod)
            self._patch(f"/api/v1/namespaces/{namespace}/pods/{pod.name}/status", {"status": {
                "phase": "Pending", "containerStatuses": [{
                    "name": (spec.get("containers") or [{}])[0].get("name", ""), "ready": False, "restartCount": 0,
                    "image": (spec.get("containers") or [{}])[0].get("image", ""), "imageID": "",
                    "state": {"waiting": {"reason": problem.reason, "message": problem.message}}}]}})
            return pod
        if pod.exit_code is None:  # started (not ended at once by a missing executable)
            self._patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}/status",
                        {"status": {"active": 1, "ready": 1, "startTime": _now()}})
        return pod

    def _finish(self, pod: PodRecord, code: int) -> None:
        pod.exit_code = code
        self._unmount(pod)
        now = _now()
        container = (pod.job_object["spec"]["template"]["spec"]["containers"])[0]
        self._patch(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status", {"status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{
                "name": container.get("name", ""), "ready": False, "restartCount": 0,
                "image": container.get("image", ""), "imageID": "",
                "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "finishedAt": now}}}]}})
        if code == 0:
            status = {"active": None, "ready": 0, "succeeded": 1, "completionTime": now, "conditions": [
                _condition("SuccessCriteriaMet", "CompletionsReached", now), _condition("Complete", "CompletionsReached", now)]}
        else:
            status = {"active": None, "ready": 0, "failed": 1, "conditions": [
                _condition("FailureTarget", "BackoffLimitExceeded", now),
                _condition("Failed", "BackoffLimitExceeded", now, "Job has reached the specified backoff limit")]}
        self._patch(f"/apis/batch/v1/namespaces/{pod.namespace}/jobs/{pod.job}/status", {"status": status})

    # -- the kubelet -----------------------------------------------------------------------

    def _run(self, pod: PodRecord, spec: dict[str, Any]) -> None:
        containers = spec.get("containers") or []
        init = spec.get("initContainers") or []
        if len(containers) != 1 or any(c.get("restartPolicy") != "Always" for c in init):
            raise _PodProblem("NotEmulated", "the kubelet double runs Pods of exactly one container, no init "
                                             "containers other than native sidecars")
        pod.sidecars = [c["name"] for c in init]
        (container,) = containers
        env = {**self.image.env, "HOSTNAME": pod.name}
        api = urlsplit(self.api_url)
        env["KUBERNETES_SERVICE_HOST"] = api.hostname or ""
        env["KUBERNETES_SERVICE_PORT"] = str(api.port or (443 if api.scheme == "https" else 80))
        pod_dir = self._state / "pods" / pod.name
        if spec.get("automountServiceAccountToken", True):
            env["KUBECONFIG"] = str(write_kubeconfig(
                pod_dir / "serviceaccount" / "kubeconfig", self.api_url,
                token=f"{SA_TOKEN_PREFIX}{pod.namespace}:{pod.service_account}", namespace=pod.namespace))
        env.update(self._environment(pod, container))
        self._mount(pod, spec.get("volumes") or [], container.get("volumeMounts") or [], pod_dir)
        command, args = container.get("command"), container.get("args")
        if command:
            argv = [*command, *(args or [])]
        else:
            argv = [*self.image.entrypoint, *(args if args is not None else self.image.cmd)]
        if not argv:
            raise _PodProblem("CreateContainerError", "no command: the image has no entrypoint or cmd")
        pod.argv, pod.env = argv, env
        workdir = self._host_path(container.get("workingDir") or self.image.workdir, what="workingDir")
        workdir.mkdir(parents=True, exist_ok=True)
        pod.log_path = pod_dir / "container.log"
        pod.log_path.parent.mkdir(parents=True, exist_ok=True)
        executable = shutil.which(argv[0], path=env.get("PATH", ""))
        if executable is None:
            pod.log_path.write_text(f'exec: "{argv[0]}": executable file not found in $PATH\n')
            self._finish(pod, 127)
            return
        with open(pod.log_path, "ab") as log:
            pod.process = subprocess.Popen([executable, *argv[1:]], env=env, cwd=workdir, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._patch(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status", {"status": {
            "phase": "Running", "startTime": _now(),
            "containerStatuses": [{"name": container.get("name", ""), "ready": True, "restartCount": 0,
                                   "image": container.get("image", ""), "imageID": "",
                                   "state": {"running": {"startedAt": _now()}}}]}})

    def _environment(self, pod: PodRecord, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or ():
            prefix = source.get("prefix") or ""
            if "configMapRef" in source:
                ref, data = source["configMapRef"], self._config_map(pod.namespace, source["configMapRef"])
            elif "secretRef" in source:
                ref, data = source["secretRef"], self._secret(pod.namespace, source["secretRef"])
            else:
                raise _PodProblem("NotEmulated", f"envFrom source {sorted(source)}")
            if data is None and not ref.get("optional"):
                kind = "configmap" if "configMapRef" in source else "secret"
                raise _PodProblem("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
            env.update({f"{prefix}{k}": v for k, v in (data or {}).items()})
        for item in container.get("env") or ():
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = str(item.get("value") or "")
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath")
                fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace,
                          "spec.serviceAccountName": pod.service_account}
                if path not in fields:
                    raise _PodProblem("NotEmulated", f"fieldRef {path}")
                env[name] = fields[path]
                continue
            kind, ref = ("secret", source["secretKeyRef"]) if "secretKeyRef" in source else (
                "configmap", source.get("configMapKeyRef"))
            if ref is None:
                raise _PodProblem("NotEmulated", f"valueFrom {sorted(source)}")
            data = self._secret(pod.namespace, ref) if kind == "secret" else self._config_map(pod.namespace, ref)
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                missing = (f'{kind} "{ref.get("name")}" not found' if data is None
                           else f'couldn\'t find key {ref["key"]} in {kind.title()} {pod.namespace}/{ref.get("name")}')
                raise _PodProblem("CreateContainerConfigError", missing)
            env[name] = data[ref["key"]]
        return env

    def _mount(self, pod: PodRecord, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], pod_dir: Path) -> None:
        by_name = {v["name"]: v for v in volumes}
        sources: dict[str, Path] = {}
        for mount in mounts:
            name = mount["name"]
            if name not in by_name:
                raise _PodProblem("CreateContainerConfigError", f"volumeMount {name} names no volume")
            if name not in sources:
                sources[name] = self._volume(pod, by_name[name], pod_dir / "volumes" / name)
            source = sources[name] / mount["subPath"] if mount.get("subPath") else sources[name]
            target = self._host_path(mount["mountPath"], what="mountPath")
            with self._lock:
                for other in self.pods.values():
                    if other is not pod and other.exit_code is None and target in other.mounts:
                        raise _PodProblem("FailedMount", f"{mount['mountPath']} is mounted by running Pod "
                                                         f"{other.name} (Pods share this host's filesystem)")
            if target.is_symlink():
                target.unlink()  # left by a Pod that has ended
            elif target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # an empty directory of the image, which a mount would cover
            elif target.exists():
                raise _PodProblem("FailedMount", f"{mount['mountPath']} exists on this host and is no mount")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
            pod.mounts.append(target)

    def _volume(self, pod: PodRecord, volume: dict[str, Any], where: Path) -> Path:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if self._get(f"/api/v1/namespaces/{pod.namespace}/persistentvolumeclaims/{quote(claim)}") is None:
                raise _PodProblem("FailedMount", f'persistentvolumeclaim "{claim}" not found')
            path = self._state / "claims" / pod.namespace / claim
            path.mkdir(parents=True, exist_ok=True)
            return path
        where.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return where
        if "configMap" in volume:
            ref, data = volume["configMap"], self._config_map(pod.namespace, volume["configMap"])
            kind, mode = "configmap", volume["configMap"].get("defaultMode", 0o644)
        elif "secret" in volume:
            ref = {"name": volume["secret"].get("secretName"), "optional": volume["secret"].get("optional")}
            data, kind, mode = self._secret(pod.namespace, ref), "secret", volume["secret"].get("defaultMode", 0o644)
            ref["items"] = volume["secret"].get("items")
        else:
            raise _PodProblem("NotEmulated", f"volume {volume['name']}: type {sorted(set(volume) - {'name'})}")
        if data is None:
            if ref.get("optional"):
                return where
            raise _PodProblem("FailedMount", f'{kind} "{ref.get("name")}" not found')
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise _PodProblem("FailedMount", f"{kind} {ref.get('name')} has no key {item['key']}")
            path = where / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            path.chmod(item.get("mode", mode))
        return where

    def _unmount(self, pod: PodRecord) -> None:
        for target in pod.mounts:
            if target.is_symlink():
                target.unlink()
        pod.mounts.clear()
        shutil.rmtree(self._state / "pods" / pod.name / "volumes", ignore_errors=True)

    def _host_path(self, container_path: str, *, what: str) -> Path:
        # Not resolved: the path may be one of the double's own symlinks.
        path = Path(os.path.normpath(container_path))
        if not path.is_absolute() or not path.is_relative_to(self.root):
            raise _PodProblem("NotEmulated", f"{what} {container_path} is outside {self.root}: the Pod's "
                                             "process shares this host's filesystem")
        return path

    def _terminate(self, pod: PodRecord) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(self.grace_seconds)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(5)

    # -- the API ---------------------------------------------------------------------------

    def _config_map(self, namespace: str, ref: Mapping[str, Any]) -> dict[str, str] | None:
        obj = self._get(f"/api/v1/namespaces/{namespace}/configmaps/{quote(str(ref.get('name')))}")
        return None if obj is None else {k: str(v) for k, v in (obj.get("data") or {}).items()}

    def _secret(self, namespace: str, ref: Mapping[str, Any]) -> dict[str, str] | None:
        obj = self._get(f"/api/v1/namespaces/{namespace}/secrets/{quote(str(ref.get('name')))}")
        if obj is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        return data

    def _get(self, path: str) -> dict[str, Any] | None:
        resp = self._http.get(f"{self.api_url}{path}", timeout=_TIMEOUT)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300:
            raise KubeletDoubleError(f"GET {path}: HTTP {resp.status_code}")
        return resp.json()

    def _post(self, path: str, body: Mapping[str, Any]) -> None:
        resp = self._http.post(f"{self.api_url}{path}", json=body, timeout=_TIMEOUT)
        if resp.status_code >= 300:
            raise KubeletDoubleError(f"POST {path}: HTTP {resp.status_code}")

    def _patch(self, path: str, body: Mapping[str, Any]) -> None:
        resp = self._http.patch(f"{self.api_url}{path}", data=json.dumps(body), timeout=_TIMEOUT,
                                headers={"Content-Type": "application/merge-patch+json"})
        if resp.status_code >= 300:
            raise KubeletDoubleError(f"PATCH {path}: HTTP {resp.status_code}")


def _exit_code(returncode: int) -> int:
    """A container killed by signal N exits 128 + N, as the container runtime reports it."""
    return 128 - returncode if returncode < 0 else returncode


def _condition(kind: str, reason: str, now: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
