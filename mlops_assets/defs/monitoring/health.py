"""Platform health: one asset, refreshed daily, that puts the champion, its live performance and
drift, the gate's recent decisions, failed runs and the slowest steps in one place."""

import base64
import time
from datetime import datetime, timezone

import dagster as dg

from mlops_assets.defs.common import OWNERS, md_table
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
from mlops_assets.settings import get_settings

DAYS = 28


def _gate_history(instance, limit: int = 10) -> list[dict]:
    rows = []
    for rec in instance.fetch_materializations(dg.AssetKey("challenger"), limit=limit).records:
        md = rec.asset_materialization.metadata
        rows.append({
            "week": rec.partition_key or "",
            "version": str(md["model_version"].value) if "model_version" in md else "",
            "holdout_auc": float(md["holdout_roc_auc"].value) if "holdout_roc_auc" in md else float("nan"),
            "champion": str(md["champion_version"].value) if "champion_version" in md else "",
            "decision": str(md["gate_decision"].value).split(":")[0] if "gate_decision" in md else "",
        })
    return rows


def _failed_runs(instance, since: float) -> list[dict]:
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                                                     created_after=datetime.fromtimestamp(since, timezone.utc)))
    return [{"job": r.dagster_run.job_name, "run_id": r.dagster_run.run_id,
             "partition": r.dagster_run.tags.get("dagster/partition", ""),
             "trigger": r.dagster_run.tags.get("mlops/trigger", "")} for r in records]


def _slowest_steps(instance, since: float, runs: int = 50, top: int = 10) -> list[dict]:
    steps = []
    for rec in instance.get_run_records(dg.RunsFilter(created_after=datetime.fromtimestamp(since, timezone.utc)),
                                        limit=runs):
        for st in instance.get_run_step_stats(rec.dagster_run.run_id):
            if st.start_time and st.end_time:
                steps.append({"step": st.step_key, "job": rec.dagster_run.job_name,
                              "seconds": st.end_time - st.start_time, "status": str(st.status.value)})
    return sorted(steps, key=lambda s: -s["seconds"])[:top]


@dg.asset(
    group_name="monitoring",
    deps=["prediction_performance", "feature_drift", "champion"],
    kinds={"matplotlib", "mlflow"},
    op_tags=cpu_step_tags("small"),
    owners=OWNERS,
)
def platform_health(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage):
    """The platform at a glance: the champion (version, age, data window), live ROC AUC and drift
    over the last 4 weeks (table and chart), the gate's recent decisions, failed runs of the last
    7 days and the slowest steps.  Also written to ``$MLOPS_HOME/reports/``."""
    from mlops_assets.lib import registry
    from mlops_assets.lib.drift import alarm_rows
    from mlops_assets.lib.features import CALENDAR_FEATURES
    from mlops_assets.lib.report import health_chart
    from mlops_assets.lib.storage import Location

    s = get_settings()
    mlflow.experiment_id()
    inst = context.instance
    lk = lake.lake()
    champ = registry.alias_version(registry.CHAMPION)
    if champ is not None:
        promoted = champ.tags.get("promoted_at")
        age_days = ((datetime.now(timezone.utc) - datetime.fromisoformat(promoted)).total_seconds() / 86400
                    if promoted else float("nan"))
        champion = {"version": str(champ.version), "family": champ.tags.get("family", ""),
                    "data_window": champ.tags.get("data_window", ""), "age_days": age_days,
                    "holdout_auc": float(champ.tags.get("holdout_roc_auc", "nan"))}
    else:
        champion = {"version": "none", "family": "", "data_window": "", "age_days": float("nan"), "holdout_auc": float("nan")}

    perf_days = sorted(inst.get_materialized_partitions(dg.AssetKey("prediction_performance")))[-DAYS:]
    perf = lk.read_many("prediction_performance", perf_days, missing_ok=True)
    if len(perf) and "role" in perf:
        perf = perf[perf["role"] != "shadow"]
    perf_rows = perf[["date", "model_version", "roc_auc", "log_loss", "n"]].to_dict("records") if len(perf) else []
    drift_days = sorted(inst.get_materialized_partitions(dg.AssetKey("feature_drift")))[-DAYS:]
    drift = lk.read_many("feature_drift", drift_days, missing_ok=True)
    if len(drift):
        drift = alarm_rows(drift[~drift["feature"].isin(CALENDAR_FEATURES)])
    drift_rows = drift[["date", "feature", "psi", "threshold"]].to_dict("records") if len(drift) else []
    drift_daily = [{"date": d, "max_psi": float(g["psi"].max()), "major_features": int(g["alarm"].sum())}
                   for d, g in drift.groupby("date")] if len(drift) else []
    gates = _gate_history(inst)
    week_ago = time.time() - 7 * 86400
    failed = _failed_runs(inst, week_ago)
    slow = _slowest_steps(inst, week_ago)
    holdout = {g["version"]: g["holdout_auc"] for g in gates if g["version"]}

    png = health_chart(perf_rows, drift_rows, holdout)
    reports = Location(s.home / "reports")
    reports.write_bytes("platform_health.png", png)
    md = "\n\n".join([
        f"### Champion\n{md_table([champion])}",
        f"### Live performance (last {len(perf_rows)} scored days)\n{md_table(perf_rows)}",
        f"### Drift (largest PSI per day, calendar excluded)\n{md_table(drift_daily)}",
        f"### Gate decisions\n{md_table(gates)}",
        f"### Failed runs, last 7 days ({len(failed)})\n{md_table(failed)}",
        f"### Slowest steps, last 7 days\n{md_table(slow, floatfmt='.1f')}",
    ])
    reports.write_bytes("platform_health.md", md.encode())
    chart_md = f"![platform health](data:image/png;base64,{base64.b64encode(png).decode()})"
    context.log.info(f"platform health: {reports.describe('platform_health.md')}, {reports.describe('platform_health.png')}")
    return dg.MaterializeResult(metadata={
        "champion_version": champion["version"],
        "champion_age_days": dg.MetadataValue.float(champion["age_days"]),
        "live_roc_auc_latest": dg.MetadataValue.float(float(perf_rows[-1]["roc_auc"]) if perf_rows else float("nan")),
        "live_days": len(perf_rows),
        "max_psi_latest": dg.MetadataValue.float(drift_daily[-1]["max_psi"] if drift_daily else float("nan")),
        "failed_runs_7d": len(failed),
        "summary": dg.MetadataValue.md(md),
        "chart": dg.MetadataValue.md(chart_md),
        "chart_path": dg.MetadataValue.path(reports.describe("platform_health.png")),
        "report_path": dg.MetadataValue.path(reports.describe("platform_health.md")),
    })


platform_health_job = dg.define_asset_job("platform_health_job", selection=[platform_health])
platform_health_schedule = dg.ScheduleDefinition(
    name="platform_health_schedule", job=platform_health_job, cron_schedule="0 7 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh platform_health every morning (it reads the instance, the lake and the registry).",
)
