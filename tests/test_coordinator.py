"""coelho_pipeline/coordinator.py: dagster.yaml's run queue dequeues every half second, and is
Dagster's QueuedRunCoordinator in everything else (its tag limit keeps one manifest writer at a time).

The real daemon dequeuing through it is tests/test_daemon.py's (its instance is dagster.yaml's); the
time it saves is measured in benchmarks/ (P2, P3), never here.
"""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from coelho_pipeline.coordinator import RunQueue
from test_instance import dagster_home, instance  # noqa: F401  (the same fixtures)


def test_dagster_yaml_queues_runs_in_it_and_the_daemon_dequeues_every_half_second(
        instance: dg.DagsterInstance) -> None:
    coordinator = instance.run_coordinator
    assert type(coordinator) is RunQueue and isinstance(coordinator, QueuedRunCoordinator)
    daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
    assert daemon.interval_seconds == 0.5
    # The rest is Dagster's queue, configured by dagster.yaml: one manifest writer per project at a time.
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert [(x["key"], x["limit"]) for x in limits] == [("coelho/manifest-writer", 1)]


def _with_interval(dagster_home: Path, value: object) -> None:
    path = dagster_home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = value
    path.write_text(yaml.safe_dump(config))


def test_whole_seconds_are_taken_as_with_dagsters_queue(dagster_home: Path) -> None:
    _with_interval(dagster_home, 2)
    with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
        assert loaded.run_coordinator.dequeue_interval_seconds == 2


@pytest.mark.parametrize("value", [0.1, 0])
def test_an_interval_below_half_a_second_is_refused_naming_the_setting(dagster_home: Path, value: float) -> None:
    _with_interval(dagster_home, value)
    with pytest.raises(ValueError, match=r"dagster.yaml: run_coordinator.config.dequeue_interval_seconds is 0"):
        with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
            loaded.run_coordinator  # noqa: B018  (built on first use)


def test_the_interval_may_come_from_an_environment_variable(dagster_home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _with_interval(dagster_home, {"env": "MY_DEQUEUE_SECONDS"})
    monkeypatch.setenv("MY_DEQUEUE_SECONDS", "0.75")
    with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
        assert loaded.run_coordinator.dequeue_interval_seconds == 0.75


@pytest.mark.parametrize(("value", "said"), [(None, "MY_DEQUEUE_SECONDS is not set"),
                                             ("half-a-second", "MY_DEQUEUE_SECONDS is not a number of seconds")])
def test_an_unusable_environment_variable_is_named_and_its_value_not_repeated(
        dagster_home: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, said: str) -> None:
    _with_interval(dagster_home, {"env": "MY_DEQUEUE_SECONDS"})
    if value is None:
        monkeypatch.delenv("MY_DEQUEUE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("MY_DEQUEUE_SECONDS", value)
    with pytest.raises(ValueError, match=r"run_coordinator.config.dequeue_interval_seconds") as raised:
        with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
            loaded.run_coordinator  # noqa: B018
    assert said in str(raised.value) and "half-a-second" not in str(raised.value)


def test_queue_limits_set_both_here_and_under_concurrency_are_refused_as_dagster_refuses_them(
        dagster_home: Path) -> None:
    # dagster.yaml has `concurrency: runs:`; Dagster lets that section win silently over the coordinator's
    # own limits unless the class is its QueuedRunCoordinator by name, so RunQueue refuses them itself.
    path = dagster_home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 10
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(dg.DagsterInvalidConfigError, match=r"run_coordinator.config sets max_concurrent_runs"):
        with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
            loaded.run_coordinator  # noqa: B018
    # Dagster's own coordinator is refused the same way: the behaviour RunQueue keeps.
    config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                                 "config": {"max_concurrent_runs": 10}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(dg.DagsterInvalidConfigError, match=r"max_concurrent_runs"):
        with dg.DagsterInstance.from_config(str(dagster_home)) as loaded:
            loaded.run_coordinator  # noqa: B018
