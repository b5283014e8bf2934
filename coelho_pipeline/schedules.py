"""Drift is checked on a schedule, independent of deliveries; the delivery insight is computed weekly."""

import dagster as dg

from coelho_pipeline.jobs import TargetJobs
from coelho_pipeline.targets import Target


def build_schedules(target: Target, jobs: TargetJobs) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name=target.name("drift_check_schedule"),
            job=jobs.drift_check,
            cron_schedule="*/10 * * * *",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
        dg.ScheduleDefinition(
            name=target.name("delivery_insight_schedule"),
            job=jobs.delivery_insight,
            cron_schedule="0 6 * * 1",  # Mondays, 06:00 UTC: last week's figures at the start of the next
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
    ]
