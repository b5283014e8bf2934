"""Case 4: the branch moves while argocd_sync waits.

Real Dagster runs in process, the real git daemon, images built and pushed to the session's
registry, and the Argo CD controller double over kmock (which re-reads the branch on a refresh,
as Argo CD does). A push during the wait that keeps this delivery's images (a docs commit), or
carries newer ones (a newer delivery), is success and the metadata says which revision was
reached and why; a push that replaces them with something else is not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from coelho_pipeline.resources.argocd import ArgoCDClient
from pipeline_harness import Pipeline, materializations

pytestmark = pytest.mark.docker

VALUES = "k3d/helm/values.yaml"
# The operation runs long enough for a push to land in it; the rollout outlasts the periodic
# re-compare, so Argo CD (the double) shows the pushed revision before it reports Healthy.
MOVING = {"sync_delay": 5, "health_delay": 3, "resync_interval": 0.5}


def with_double(pipeline: Pipeline, argocd_for_repo, **options) -> tuple[Pipeline, object, Path]:
    double, kubeconfig = argocd_for_repo(pipeline.repo, **options)
    return pipeline.with_settings(kubeconfig=str(kubeconfig), sync_timeout=20), double, kubeconfig


def during_our_operation(double, act: Callable[[str], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Runs ``act(revision)`` as soon as the pipeline's sync operation is Running in the double."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            double.wait_for(lambda: any(e.detail.get("initiated_by") == "coelho-pipeline"
                                        for e in double.events_of("operation-started")), timeout=300, interval=0.05)
            started = [e for e in double.events_of("operation-started")
                       if e.detail.get("initiated_by") == "coelho-pipeline"][0]
            act(started.detail["revision"])
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def set_fastapi_tag(values: str, old: str, new: str) -> str:
    assert values.count(f'"{old}"') >= 1, "the fastapi tag is not where the test expects it"
    head, sep, tail = values.partition("fastapi:")
    return head + sep + tail.replace(f'"{old}"', f'"{new}"', 1)


def test_a_docs_push_during_the_wait_is_success_at_the_descendant(pipeline, argocd_for_repo) -> None:
    p, double, _ = with_double(pipeline, argocd_for_repo, **MOVING)
    seed = p.repo.head()
    pushed: list[str] = []
    thread, errors = during_our_operation(
        double, lambda _: pushed.append(p.repo.push({"docs/notes.md": "a human writes docs\n"}, "Docs: notes")))

    result = p.deliver(seed)
    thread.join(30)

    assert not errors, errors
    assert result.success
    manifest = p.repo.log(2)[1][0]  # the pipeline's commit, under the human's
    (docs,) = pushed
    sync = materializations(result)["argocd_sync"]
    assert sync["requested_revision"] == manifest == sync["manifest_commit"]
    assert sync["revision"] == docs
    assert sync["reached_via"] == f"descendant {docs} (pushed during the wait)"
    assert (sync["sync"], sync["health"]) == ("Synced", "Healthy")


def test_a_newer_delivery_during_the_wait_is_success_at_its_commit(pipeline, argocd_for_repo) -> None:
    p, double, kubeconfig = with_double(pipeline, argocd_for_repo, **MOVING)
    seed = p.repo.head()
    pushed: list[str] = []

    def newer_delivery(ours: str) -> None:
        # What a later run does: a source commit, then its manifest commit with a newer fastapi tag,
        # then its own sync (which waits for ours to finish first).
        source = p.repo.push({"docs/newer.md": "newer source commit\n"}, "Docs: newer")
        values = p.repo.show("master", VALUES)
        pushed.append(p.repo.push({VALUES: set_fastapi_tag(values, seed, source)}, "Update image tags (newer)"))
        with ArgoCDClient.from_kubeconfig(kubeconfig=str(kubeconfig), context="kmock", app_name="coelho-realtime",
                                          namespace="argocd") as other:
            other.sync(revision=pushed[0], initiated_by="newer-delivery", timeout=60, poll_interval=0.1)

    thread, errors = during_our_operation(double, newer_delivery)
    result = p.deliver(seed)
    thread.join(60)

    assert not errors, errors
    assert result.success
    (newer,) = pushed
    sync = materializations(result)["argocd_sync"]
    assert sync["revision"] == newer and sync["requested_revision"] != newer
    assert sync["reached_via"] == f"descendant {newer} (pushed during the wait)"
    assert any(e.detail.get("revision") == newer for e in double.events_of("operation-finished"))


def test_a_push_that_replaces_our_images_is_not_taken_for_success(pipeline, argocd_for_repo) -> None:
    p, double, _ = with_double(pipeline, argocd_for_repo, **MOVING)
    p = p.with_settings(sync_timeout=12)
    seed = p.repo.head()
    pushed: list[str] = []

    def hotfix(_: str) -> None:
        values = p.repo.show("master", VALUES)
        pushed.append(p.repo.push({VALUES: set_fastapi_tag(values, seed, "hotfix-1")}, "Hotfix tag by hand"))

    thread, errors = during_our_operation(double, hotfix)
    result = p.deliver(seed)
    thread.join(30)

    assert not errors, errors
    assert not result.success
    message = result.failure_data_for_node("argocd_sync").error.message
    assert f"at revision {pushed[0]} (not accepted in place of it)" in message
    assert "did not become Synced+Healthy" in message
    # Terminal: the whole wait was spent, so it is not retried.
    assert not [e for e in result.all_events if e.is_step_up_for_retry]
    assert "argocd_sync" not in materializations(result)
