"""Drift is checked on a schedule, independent of deliveries; the delivery insight is computed weekly."""

import dagster as dg

from coelho_pipeline.jobs import delivery_insight, drift_check

drift_check_schedule = dg.ScheduleDefinition(
    name="drift_check_schedule",
    job=drift_check,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

delivery_insight_schedule = dg.ScheduleDefinition(
    name="delivery_insight_schedule",
    job=delivery_insight,
    cron_schedule="0 6 * * 1",  # Mondays, 06:00 UTC: last week's figures at the start of the next
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
