"""Drift is checked on a schedule, independent of deliveries."""

import dagster as dg

from coelho_pipeline.jobs import drift_check

drift_check_schedule = dg.ScheduleDefinition(
    name="drift_check_schedule",
    job=drift_check,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
