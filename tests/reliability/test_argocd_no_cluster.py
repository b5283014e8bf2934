"""Case 9 (drift with no cluster): the ten-minute drift check says "not checked" and never goes red.

Choice: the check is not evaluated (Dagster shows live_matches_git as skipped for the run) and an
observation on live_state records status "not checked" with the reason. A passed=True result would
claim that the cluster matches Git, which nobody looked at; a failed one turned the asset red every
ten minutes for a setup (scripts/up) that has no cluster on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus

from coelho_pipeline.assets.drift import LIVE_MATCHES_GIT
from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions

CHECK = dg.AssetCheckKey(dg.AssetKey("live_state"), LIVE_MATCHES_GIT)


def test_drift_check_without_a_cluster_is_not_checked_and_not_failed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # The Git URL leads nowhere: with no cluster, nothing else is touched either.
    defs = build_definitions(Settings(git_url=str(tmp_path / "nowhere.git"), apps=("fastapi",),
                                      workdir=str(tmp_path / "work")))
    job = defs.resolve_job_def("drift_check")
    with dg.instance_for_test() as instance:
        for _ in range(2):  # two schedule ticks: neither fails
            result = job.execute_in_process(instance=instance)
            assert result.success
            assert result.get_asset_check_evaluations() == []
            assert not result.get_asset_materialization_events()
            (observed,) = result.get_asset_observation_events()
            metadata = observed.asset_observation_data.asset_observation.metadata
            assert metadata["status"].value == "not checked"
            assert "No cluster configured" in metadata["reason"].value

        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
        status = asyncio.run(record.resolve_status(LoadingContextForTest(instance)))
        assert status == AssetCheckExecutionResolvedStatus.SKIPPED
        assert not [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_step_failure]
