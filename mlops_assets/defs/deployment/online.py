"""Online traffic: what the scoring server (``mlops-serve``) was asked and answered, one day at a time.

The server records answered requests in batches under ``MLOPS_PAYLOAD_LOG_URI``
(``lib/payload_log.py``: ``<UTC day>/<server>-<seq>.parquet``). ``online_predictions`` gathers a
day's files into one lake table: each served row with its request id, row, time, model version,
features and probability. Its partitions are the days requests were *received* (real time,
from ``MLOPS_ONLINE_START``), not the replayed days of 2013 that the batch assets cover.
"""

from datetime import UTC, timedelta

import dagster as dg

from mlops_assets.defs.common import OWNERS, record_inputs
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.resources import LakeStorage
from mlops_assets.settings import get_settings

# Days a request can be received on: from MLOPS_ONLINE_START to today (UTC; end_offset=1 makes
# today's partition exist before the day is over).
online_days = dg.DailyPartitionsDefinition(start_date=get_settings().online_start, end_offset=1)


@dg.asset(
    group_name="deployment",
    partitions_def=online_days,
    kinds={"parquet"},
    owners=OWNERS,
    # a day of 1,000,000 recorded rows in 2,000 files: 1,248 MiB (bench/step_memory.py)
    op_tags=cpu_step_tags("data"),
)
def online_predictions(context: dg.AssetExecutionContext, lake: LakeStorage) -> dg.MaterializeResult:
    """Every online request the scoring server answered on the day (UTC) and recorded: request id,
    row, time, model version, the 24 features and the served probability; each (request, row)
    once, in the order received. Materialise it again as late batches land: it re-reads them all."""
    from mlops_assets.lib.payload_log import read_day
    from mlops_assets.lib.storage import digest

    s = get_settings()
    day = context.partition_key
    df, files = read_day(s.payload_log_uri, day)
    lake.lake().write("online_predictions", day, df)
    record_inputs(context, {day: {"input_fingerprint": digest(*files, s.code_version)}})
    versions = sorted(df["model_version"].astype(str).unique()) if len(df) else []
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(df),
        "requests": int(df["request_id"].nunique()) if len(df) else 0,
        "files": len(files),
        "model_versions": ", ".join(versions) or "none",
        "mean_delay_probability": dg.MetadataValue.float(float(df["delay_probability"].mean()) if len(df) else 0.0),
        "source": s.payload_log_uri,
    })


online_predictions_job = dg.define_asset_job(
    "online_predictions_job", selection=[online_predictions], partitions_def=online_days,
    description="Gather a day of the scoring server's recorded requests into the lake.",
)


@dg.schedule(job=online_predictions_job, cron_schedule="30 0 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def online_predictions_schedule(context: dg.ScheduleEvaluationContext):
    """Yesterday's online traffic, half an hour after midnight UTC (servers flush every
    ``MLOPS_PAYLOAD_FLUSH_S``)."""
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)
