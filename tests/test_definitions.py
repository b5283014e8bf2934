"""The code location as Dagster loads it: the graph, the jobs, automation and the instance config."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from coelho_pipeline import definitions
from coelho_pipeline.config import ConfigError
from coelho_pipeline.jobs import MANIFEST_WRITER_TAG

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dg.Definitions:
    monkeypatch.setenv("COELHO_GIT_URL", "git://127.0.0.1:9418/coelho-realtime.git")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)  # apps/*/Dockerfile are discovered from the working directory
    return definitions.defs()


def test_the_graph_tells_the_delivery_story(loaded: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(loaded)
    graph = loaded.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "source_commit", "image/fastapi", "image/kafka_producers", "image/sveltekit",
        "helm_values", "manifest_commit", "argocd_sync", "live_state", "rollback_commit", "delivery_hold",
        "delivery_metrics"}
    upstream = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
                for k in graph.get_all_asset_keys()}
    assert upstream["image/fastapi"] == ["source_commit"]
    assert upstream["helm_values"] == ["image/fastapi", "image/kafka_producers", "image/sveltekit", "source_commit"]
    assert upstream["manifest_commit"] == ["helm_values", "source_commit"]
    assert upstream["argocd_sync"] == ["manifest_commit"]
    assert graph.get(dg.AssetKey("rollback_commit")).group_name == "ops"  # the way back is not a delivery
    # The insight reads what deliveries and rollbacks recorded; it is never part of a delivery run.
    assert upstream["delivery_metrics"] == ["argocd_sync", "rollback_commit"]
    assert graph.get(dg.AssetKey("delivery_metrics")).group_name == "insight"
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    checks = {(spec.asset_key.to_user_string(), spec.name): spec.blocking for spec in specs}
    assert checks == {("helm_values", "tags_exist_in_registry"): True,
                      ("helm_values", "chart_renders_with_built_images"): True,
                      ("argocd_sync", "rollout_verified"): False,  # the step fails itself, after recording it
                      ("live_state", "live_matches_git"): False}


def test_automation_and_the_single_writer(loaded: dg.Definitions) -> None:
    job = loaded.resolve_job_def("deliver_commit")
    assert job.tags[MANIFEST_WRITER_TAG] == "main"
    assert loaded.resolve_sensor_def("git_push_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    schedule = loaded.resolve_schedule_def("drift_check_schedule")
    assert schedule.job_name == "drift_check" and schedule.cron_schedule == "*/10 * * * *"
    weekly = loaded.resolve_schedule_def("delivery_insight_schedule")
    assert (weekly.job_name, weekly.cron_schedule, weekly.execution_timezone) == ("delivery_insight", "0 6 * * 1", "UTC")
    assert weekly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert [k.to_user_string() for k in loaded.resolve_job_def("delivery_insight").asset_layer.selected_asset_keys] \
        == ["delivery_metrics"]
    instance = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    # Per value: one writer per project, two projects side by side (the single target's value is "main").
    assert {"key": MANIFEST_WRITER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert instance["concurrency"]["pools"]["default_limit"] == 1  # the git_manifest pool


def test_secrets_are_env_vars_not_values(loaded: dg.Definitions, monkeypatch) -> None:
    monkeypatch.setenv("COELHO_GIT_TOKEN", "tok-123")
    monkeypatch.setenv("COELHO_REGISTRY_USERNAME", "bot")
    monkeypatch.setenv("COELHO_REGISTRY_PASSWORD", "pw-456")
    monkeypatch.setenv("COELHO_NOTIFY_WEBHOOKS", "slack=https://hooks.example.test/T0/B0/hook-789")
    defs = definitions.defs()
    assert defs.resources["git"].token == dg.EnvVar("COELHO_GIT_TOKEN")
    assert defs.resources["registry"].password == dg.EnvVar("COELHO_REGISTRY_PASSWORD")
    assert defs.resources["notify"].webhooks == dg.EnvVar("COELHO_NOTIFY_WEBHOOKS")
    assert not {"tok-123", "pw-456", "hook-789"} & set(repr(defs.resources).replace("'", " ").split())
    assert all(s not in repr(defs.resources) for s in ("tok-123", "pw-456", "hook-789"))


def test_a_missing_variable_stops_the_load_naming_it(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("COELHO_GIT_URL", raising=False)
    with pytest.raises(ConfigError, match="COELHO_GIT_URL"):
        definitions.defs()


@pytest.mark.parametrize(("env", "seconds"), [({}, 4), ({"COELHO_POLL_INTERVAL_SECONDS": "30"}, 30)])
def test_the_push_sensor_ticks_every_daemon_loop_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            env: dict[str, str], seconds: int) -> None:
    # The daemon's sensor loop comes round every 5 s: a 5 s interval would skip a round now and then.
    for name, value in {"COELHO_GIT_URL": "git://127.0.0.1:9418/coelho-realtime.git", "DAGSTER_HOME": str(tmp_path),
                        **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO_ROOT)
    assert definitions.defs().get_sensor_def("git_push_sensor").minimum_interval_seconds == seconds


def test_the_daemon_runs_only_the_loops_the_pipeline_uses(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert sorted(instance.get_required_daemon_types()) == [
            "BACKFILL", "EVENT_LOG_CONSUMER", "MONITORING", "QUEUED_RUN_COORDINATOR", "SCHEDULER", "SENSOR"]
