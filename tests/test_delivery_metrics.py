"""Delivery insight: the DORA keys and the rework rate from the pipeline's own records.

The history test makes its deliveries through the real instance and real parts (git daemon, Docker
engine and registry, kmock with the Argo CD controller double): commits with known commit times,
one failed sync, a burst whose superseded commit is deployed by the newer delivery, a rollback and
the fix after it. Every figure is checked against a value worked out by hand in the test from the
commit times and the runs' own end times. The rules (windows, bands, no data) are checked on
histories built in memory.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline import cli
from coelho_pipeline.delivery.deployed import DeployedCommit
from coelho_pipeline.dev import services
from coelho_pipeline.insight.dora import LEAD_TIME_BANDS, NO_DATA, band, compute, parse_since
from coelho_pipeline.insight.history import Delivery, Deployment, History, read_history
from coelho_pipeline.insight.plot import plot_png
from pipeline_harness import DEV, SINGLE_TARGET, Pipeline, make_source_repo, materializations, settings_for

APPLICATION = "argocd/coelho-realtime"
T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


def commit(sha: str, at: datetime, *apps: str) -> DeployedCommit:
    return DeployedCommit(sha, at, apps)


# -- the rules, on histories built in memory --------------------------------------------------------


def test_an_empty_history_and_a_single_delivery_give_no_data_not_zero() -> None:
    with dg.instance_for_test() as instance:
        empty = compute(read_history(instance, SINGLE_TARGET, APPLICATION), apps=["fastapi"])
    assert empty.deliveries == 0 and all(f.value is None and f.text == NO_DATA for f in empty.figures)
    assert "0 deliveries in the window; at least 2 are needed" in empty.markdown()

    one = History(APPLICATION, (Deployment(T, "m1", "s1", False, "passed", (commit("s1", T - timedelta(hours=1)),)),),
                  (Delivery("s1", deployed_at=T),))
    single = compute(one, apps=["fastapi"], until=T + timedelta(days=3))
    assert single.deliveries == 1 and all(f.value is None for f in single.figures)
    assert "1 delivery in the window" in single.figure("change_failure_rate").detail
    assert plot_png(single).startswith(b"\x89PNG")  # "no data" panels, not a crash


def test_bands_follow_the_thresholds_and_windows_count_what_happened_in_them() -> None:
    assert band(23 * 3600, LEAD_TIME_BANDS) == "elite" and band(24 * 3600, LEAD_TIME_BANDS) == "high"
    assert band(40 * 86400, LEAD_TIME_BANDS) == "low"
    # Four deliveries a week apart, the third failed and fixed by the fourth two hours later.
    days = [T + timedelta(days=7 * i) for i in range(4)]
    deployments = tuple(Deployment(at, f"m{i}", f"s{i}", False, "passed",
                                   (commit(f"s{i}", at - timedelta(hours=30), "fastapi"),))
                        for i, at in enumerate(days) if i != 2)
    deliveries = tuple(Delivery(f"s{i}", deployed_at=at) for i, at in enumerate(days) if i != 2) + (
        Delivery("s2", failed_at=days[2], failure="sync failed"),)
    history = History(APPLICATION, deployments, deliveries)

    report = compute(history, apps=["fastapi", "sveltekit"], since=T - timedelta(days=1),
                     until=days[3] + timedelta(days=1))

    assert (report.deliveries, report.deployments) == (4, 3)
    assert report.since == T  # not before the first record
    lead = report.figure("lead_time_median_hours")
    assert (lead.value, lead.band) == (30.0, "high")
    frequency = report.figure("deployments_per_day")
    assert frequency.value == pytest.approx(3 / 22) and frequency.band == "medium"
    assert report.figure("deployment_days_per_week").value == pytest.approx(3 / (22 / 7))
    cfr = report.figure("change_failure_rate")
    assert (cfr.value, cfr.band, cfr.text) == (0.25, "low", "25.0%")
    # The failed sync at days[2] is restored by the fourth delivery's deployment a week later.
    recovery = report.figure("recovery_time_median_hours")
    assert (recovery.value, recovery.band) == (7 * 24.0, "low")
    assert report.figure("rework_rate").value == pytest.approx(1 / 3)
    assert [(a.app, a.commits, a.deployments) for a in report.apps] == [("fastapi", 3, 3), ("sveltekit", 0, 0)]
    assert report.apps[1].lead_time_median is None

    later = compute(history, since=days[1] - timedelta(hours=1), until=days[3] + timedelta(days=1))
    assert (later.deliveries, later.deployments) == (3, 2)


def test_since_takes_a_date_or_an_iso_time_and_names_what_it_refuses(capsys) -> None:
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:30:00+01:00") == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="since 'last week' is not a date"):
        parse_since("last week")
    assert cli.main(["--url", "http://127.0.0.1:9", "metrics", "--since", "last week"]) == cli.EXIT_ERROR
    assert "coelho metrics: --since 'last week' is not a date" in capsys.readouterr().err


# -- a real history ---------------------------------------------------------------------------------


def dated(minutes_before: float, start: datetime) -> dict[str, str]:
    moment = (start - timedelta(minutes=minutes_before)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return {**DEV, "GIT_AUTHOR_DATE": moment, "GIT_COMMITTER_DATE": moment}


def ended(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> datetime:
    """When the run ended, from its run record: within a second of Synced+Healthy with no soak."""
    record = pipeline.instance.get_run_record_by_id(result.run_id)
    return datetime.fromtimestamp(record.end_time, UTC)


def roll_back(pipeline: Pipeline, sha: str) -> dg.ExecuteInProcessResult:
    return pipeline.defs.resolve_job_def("rollback").execute_in_process(
        partition_key=sha, instance=pipeline.instance,
        run_config={"ops": {"rollback_commit": {"config": {"reason": "E breaks the dashboard"}}}})


def hand_median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@pytest.mark.docker
def test_figures_from_real_deliveries_a_failed_sync_a_burst_a_rollback_and_the_fix(
        tmp_path: Path, git_server, registry_addr: str, base_images, docker_host, argocd_for_repo) -> None:
    repo = make_source_repo(git_server)
    double, kubeconfig = argocd_for_repo(repo)
    start = datetime.now(UTC).replace(microsecond=0)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(repo, settings_for(repo, f"{registry_addr}/coelho", tmp_path / "work", base_images,
                                               kubeconfig=str(kubeconfig), verify_soak=0.0), instance)
        insight = pipeline.defs.resolve_job_def("delivery_insight")
        seed = repo.head()
        seed_time = datetime.fromisoformat(services.git("log", "-1", "--format=%cI", seed, cwd=repo.bare))
        seed_run = pipeline.deliver(seed)
        assert seed_run.success

        # One delivery is not a rate.
        only_seed = materializations(insight.execute_in_process(instance=instance))["delivery_metrics"]
        assert "1 delivery in the window; at least 2 are needed" in only_seed["report"]
        assert "change_failure_rate" not in only_seed and only_seed["deliveries"] == 1

        a = repo.push({"apps/fastapi/main.py": "print('a')\n"}, "FastAPI: a", env=dated(180, start))
        a_run = pipeline.deliver(a)
        b = repo.push({"apps/kafka_producers/main.py": "print('b')\n"}, "Producers: b", env=dated(150, start))
        double.fail_next_sync("one or more objects failed to apply: quota exceeded")
        b_run = pipeline.deliver(b)
        assert a_run.success and not b_run.success
        # A burst: C is superseded by D, never delivered on its own, and deployed by D's delivery.
        services.git("pull", "-q", "--ff-only", "origin", repo.branch, cwd=repo.clone)
        c_app = repo.commit({"apps/sveltekit/main.py": "print('c')\n"}, "Dashboard: c", env=dated(120, start))
        c = repo.commit({"README.md": "# c\n"}, "Docs only", env=dated(119, start))
        d = repo.push({"apps/fastapi/main.py": "print('d')\n"}, "FastAPI: d", env=dated(90, start))
        d_run = pipeline.deliver(d)
        e = repo.push({"apps/fastapi/main.py": "print('e')\n"}, "FastAPI: e", env=dated(60, start))
        e_run = pipeline.deliver(e)
        rollback_run = roll_back(pipeline, d)
        assert d_run.success and e_run.success and rollback_run.success
        assert pipeline.defs.resolve_job_def("release_hold").execute_in_process(instance=instance).success
        f = repo.push({"apps/fastapi/main.py": "print('f')\n"}, "FastAPI: f", env=dated(30, start))
        f_run = pipeline.deliver(f)
        assert f_run.success

        # The deployment of D records every human commit it brought, with the apps each changed.
        recorded = materializations(d_run)["argocd_sync"]["deployed_commits"]
        assert [(r["sha"], r["apps"]) for r in recorded] == [
            (d, ["fastapi"]), (c, []), (c_app, ["sveltekit"]), (b, ["kafka_producers"])]

        figures = materializations(insight.execute_in_process(instance=instance))["delivery_metrics"]
        end = {run.run_id: ended(pipeline, run) for run in (seed_run, a_run, b_run, d_run, e_run, rollback_run, f_run)}

    # By hand. Deliveries: seed, A, B (sync failed), D, E (rolled back), F. Deployments: seed, A, D, E,
    # the rollback, F. Commits deployed, with the run that deployed them first:
    deployed_by = {seed: (seed_time, seed_run), a: (start - timedelta(minutes=180), a_run),
                   b: (start - timedelta(minutes=150), d_run), c_app: (start - timedelta(minutes=120), d_run),
                   c: (start - timedelta(minutes=119), d_run), d: (start - timedelta(minutes=90), d_run),
                   e: (start - timedelta(minutes=60), e_run), f: (start - timedelta(minutes=30), f_run)}
    lead = [(end[run.run_id] - at).total_seconds() for at, run in deployed_by.values()]
    assert figures["lead_time_median_hours"] == pytest.approx(hand_median(lead) / 3600, abs=2 / 3600)
    ordered = sorted(lead)
    rank = 0.9 * (len(ordered) - 1)
    p90 = ordered[int(rank)] + (rank - int(rank)) * (ordered[int(rank) + 1] - ordered[int(rank)])
    assert figures["lead_time_p90_hours"] == pytest.approx(p90 / 3600, abs=2 / 3600)
    assert figures["deliveries"] == 6 and figures["deployments"] == 6
    assert figures["change_failure_rate"] == pytest.approx(2 / 6, abs=1e-4)
    # Rework: the rollback, D (the first delivery deployed after B failed), F (the first after E).
    assert figures["rework_rate"] == pytest.approx(3 / 6, abs=1e-4)
    # B failed at its sync and was restored by D's deployment; E by the rollback.
    recoveries = [(end[d_run.run_id] - end[b_run.run_id]).total_seconds(),
                  (end[rollback_run.run_id] - end[e_run.run_id]).total_seconds()]
    assert figures["recovery_time_median_hours"] == pytest.approx(hand_median(recoveries) / 3600, abs=3 / 3600)
    days_with_deployments = len({end[r.run_id].date() for r in (seed_run, a_run, d_run, e_run, rollback_run, f_run)})
    assert figures["deployments_per_day"] == pytest.approx(6.0)  # a window under a day counts as one day
    assert figures["deployment_days_per_week"] == pytest.approx(days_with_deployments)
    assert figures["dora_bands"] == ("lead time for changes, median: elite, deployment frequency: elite, "
                                     "change failure rate: low, failed-deployment recovery time, median: elite")
    report = figures["report"]
    assert "| change failure rate | 33.3% | low | 2 of 6 deliveries failed (rolled back 1, sync failed 1) |" in report
    assert "| fastapi | 5 | " in report and "| kafka_producers | 2 | " in report and "| sveltekit | 2 | " in report
    png = base64.b64decode(figures["plot"].split("base64,", 1)[1].rstrip(")"))
    assert png.startswith(b"\x89PNG")
