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
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
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
    "online_predictions_job", selection=["online_predictions", "online_feature_drift"], partitions_def=online_days,
    description="Gather a day of the scoring server's recorded requests into the lake, and their drift.",
)


@dg.schedule(job=online_predictions_job, cron_schedule="30 0 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def online_predictions_schedule(context: dg.ScheduleEvaluationContext):
    """Yesterday's online traffic, half an hour after midnight UTC (servers flush every
    ``MLOPS_PAYLOAD_FLUSH_S``)."""
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


# Below this many online rows in a day, PSI against a training reference of weeks says little (the
# thresholds were calibrated on windows of ~6,000 flights): the rows are reported, never alarmed.
MIN_ONLINE_ROWS_FOR_ALARM = 1000


@dg.asset(
    group_name="monitoring",
    partitions_def=online_days,
    deps=["online_predictions"],
    kinds={"scipy", "parquet"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),
)
def online_feature_drift(context: dg.AssetExecutionContext, mlflow: MlflowTracking,
                         lake: LakeStorage) -> dg.MaterializeResult:
    """Drift of the day's online traffic, as ``feature_drift`` measures the batch: PSI per feature and
    of the served probabilities against the training reference of the version that answered (one
    block of rows per version), with its calibrated threshold. Alarms need at least
    ``MIN_ONLINE_ROWS_FOR_ALARM`` rows of a version in the day; fewer are reported, not alarmed."""
    import pandas as pd

    from mlops_assets.lib import registry
    from mlops_assets.lib.drift import drift_report
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.lib.storage import digest

    mlflow.experiment_id()
    day = context.partition_key
    lk = lake.lake()
    online, sha = lk.read_fp("online_predictions", day)
    reports = []
    for version, rows in online.groupby(online["model_version"].astype(str)):
        if version == "unregistered":
            continue
        rep = drift_report(registry.load_reference(version), rows[FEATURE_COLUMNS],
                           output=rows["delay_probability"].to_numpy())
        rep.insert(0, "date", day)
        rep["model_version"] = version
        rep["rows"] = len(rows)
        if len(rows) < MIN_ONLINE_ROWS_FOR_ALARM:
            rep["alarm"] = False
        reports.append(rep)
    out = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(
        columns=["date", "feature", "psi", "threshold", "alarm", "model_version", "rows"])
    lk.write("online_feature_drift", day, out)
    record_inputs(context, {day: {"input_fingerprint": digest(sha, get_settings().code_version)}})
    feats = out[out["kind"] != "output"] if len(out) else out
    return dg.MaterializeResult(metadata={
        "online_rows": len(online),
        "model_versions": ", ".join(sorted(out["model_version"].astype(str).unique())) if len(out) else "none",
        "max_psi": dg.MetadataValue.float(float(out["psi"].max()) if len(out) else 0.0),
        "drifted_features": ", ".join(feats.loc[feats["alarm"].astype(bool), "feature"]) if len(feats) else "none",
        "alarms_need_rows": MIN_ONLINE_ROWS_FOR_ALARM,
    })
