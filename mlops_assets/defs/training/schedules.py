"""Schedules: the weekly retraining cadence and daily scoring.

Both are built from the partitioned jobs, so each tick targets the partition that just ended.
They are off by default: the bundled data is 2013's, replayed, so wall-clock cadence has no
partition to run; the sensors drive the replayed world.  Turn them on for live feeds.
"""

import dagster as dg

from mlops_assets.defs.jobs import scoring_job, training_job

weekly_training_schedule = dg.build_schedule_from_partitioned_job(
    training_job, name="weekly_training_schedule", hour_of_day=6, default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain every week, for the week that just ended (Monday 06:00).",
)
daily_scoring_schedule = dg.build_schedule_from_partitioned_job(
    scoring_job, name="daily_scoring_schedule", hour_of_day=5, default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Score and monitor drift every day, for the day that just ended.",
)
