"""The auto-rollback guards against a real (ephemeral) Dagster instance: runs and materializations
as deliveries leave them. The full path through the daemon is in reliability/test_daemon_auto_rollback.py."""

from __future__ import annotations

import time
import uuid

import dagster as dg
import pytest

from coelho_pipeline import auto_rollback
from coelho_pipeline.auto_rollback import AUTO_ROLLBACK_TAG, DeployFailure, decide, still_current
from coelho_pipeline.hold import hold_event
from coelho_pipeline.jobs import delivery_tags
from pipeline_harness import SINGLE_TARGET

GOOD, BAD, FAILED = "a" * 40, "b" * 40, "c" * 40
# What the delivery and rollback jobs of the target carry: the in-flight guard looks for them.
TAGS = delivery_tags(SINGLE_TARGET)


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def delivered(instance, sha: str, verification: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "argocd_sync", partition=sha, metadata={"verification": verification}))
    time.sleep(0.01)


def failed_run(instance, sha: str = FAILED, *, job: str = "deliver_commit", status=dg.DagsterRunStatus.FAILURE,
               tags: dict | None = None) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status,
                        tags={"dagster/partition": sha, **TAGS, **(tags or {})})
    instance.add_run(run)
    return run


def test_rolls_back_to_the_newest_delivery_that_passed_verification(instance) -> None:
    delivered(instance, GOOD, "passed")
    delivered(instance, BAD, "inconclusive")  # not verified: skipped
    run = failed_run(instance)
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.DEGRADED.value, writer_tags=TAGS)
    assert decision.target == GOOD
    assert decision.reason == f"the delivery of {FAILED} degraded: rolling back to {GOOD}, the last verified delivery"


def test_the_failed_delivery_itself_is_never_the_target(instance) -> None:
    delivered(instance, GOOD, "passed")
    delivered(instance, FAILED, "passed")  # an earlier, verified delivery of the same commit
    run = failed_run(instance)
    assert decide(instance, SINGLE_TARGET, run, DeployFailure.VERIFICATION.value, writer_tags=TAGS).target == GOOD


@pytest.mark.parametrize("kind", [None, "build failed"])
def test_a_failure_before_anything_ran_in_the_cluster_is_not_rolled_back(instance, kind) -> None:
    delivered(instance, GOOD, "passed")
    decision = decide(instance, SINGLE_TARGET, failed_run(instance), kind, writer_tags=TAGS)
    assert decision.target is None and "nothing to roll back" in decision.reason


def test_a_rollback_is_never_rolled_back(instance) -> None:
    delivered(instance, GOOD, "passed")
    run = failed_run(instance, job="rollback", tags={AUTO_ROLLBACK_TAG: "x"})
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target is None and "a rollback is never rolled back" in decision.reason


def test_not_while_held(instance) -> None:
    delivered(instance, GOOD, "passed")
    instance.report_runless_asset_event(hold_event(SINGLE_TARGET, held=True, by="rollback to aaaa", reason="bad"))
    decision = decide(instance, SINGLE_TARGET, failed_run(instance), DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target is None and "already held since" in decision.reason


def test_not_while_another_delivery_is_in_flight(instance) -> None:
    delivered(instance, GOOD, "passed")
    run = failed_run(instance)
    failed_run(instance, "d" * 40, status=dg.DagsterRunStatus.STARTED)
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target is None and "another delivery is in flight (deliver_commit dddddddddddd" in decision.reason


def test_a_failure_that_ended_long_ago_is_stale(instance) -> None:
    delivered(instance, GOOD, "passed")
    run = failed_run(instance)
    later = time.time() + auto_rollback.STALE_AFTER_SECONDS + 60
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.SYNC.value, writer_tags=TAGS, now=later)
    assert decision.target is None and "stale" in decision.reason


def test_a_failure_superseded_by_a_newer_delivery_is_stale(instance) -> None:
    delivered(instance, GOOD, "passed")
    run = failed_run(instance)
    time.sleep(0.01)
    delivered(instance, "e" * 40, "passed")  # reached the cluster after the failed run started
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target is None and "is stale" in decision.reason


def test_without_an_earlier_verified_delivery_there_is_nothing_to_roll_back_to(instance) -> None:
    delivered(instance, BAD, "failed")
    decision = decide(instance, SINGLE_TARGET, failed_run(instance), DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target is None and "no earlier delivery passed verification" in decision.reason


def test_a_version_someone_rolled_back_from_is_never_the_target(instance) -> None:
    delivered(instance, GOOD, "passed")
    delivered(instance, BAD, "passed")  # verified, yet a human rolled it back to GOOD
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "rollback_commit", partition=GOOD, metadata={"rolled_back_from": BAD}))
    time.sleep(0.01)
    run = failed_run(instance)
    decision = decide(instance, SINGLE_TARGET, run, DeployFailure.SYNC.value, writer_tags=TAGS)
    assert decision.target == GOOD


def test_the_rollback_refuses_when_a_newer_delivery_landed_after_the_decision(instance) -> None:
    delivered(instance, GOOD, "passed")
    run = failed_run(instance)
    assert still_current(instance, SINGLE_TARGET, run.run_id, deployed_source=FAILED) is None
    assert "now deploys " + "d" * 40 in still_current(instance, SINGLE_TARGET, run.run_id, deployed_source="d" * 40)
    time.sleep(0.01)
    delivered(instance, "d" * 40, "passed")
    assert "is stale" in still_current(instance, SINGLE_TARGET, run.run_id, deployed_source=FAILED)
    assert "gone from the instance" in still_current(instance, SINGLE_TARGET, "no-such-run", deployed_source=None)
