"""Sensors that watch the live model and the platform.

* ``model_health_sensor``: reads the latest ``prediction_performance`` and ``feature_drift``
  partitions and requests the training job for the latest complete week when the champion has
  decayed (``lib.health.assess``); the run's tags say why; at most one request per week.
* ``run_failure_alert``: POSTs a JSON alert for every failed run to ``MLOPS_ALERT_WEBHOOK_URL``
  (logs it when no URL is set).
* ``close_mlflow_runs_of_failed_runs`` / ``..._of_canceled_runs``: a training run that failed or
  was canceled, including one whose process was killed (run monitoring then marks it failed),
  leaves no MLflow run of its own RUNNING: they are ended (FAILED, or KILLED when canceled), with
  the reason in the tag ``mlops_closed_reason``.
"""

import json
import urllib.request
from datetime import date, timedelta

import dagster as dg

from mlops_assets.defs.ingestion.sensors import INTERVAL
from mlops_assets.defs.jobs import training_job
from mlops_assets.defs.partitions import week_days
from mlops_assets.settings import get_settings



def _recent_partitions(context, asset: str, n: int) -> list[str]:
    return sorted(context.instance.get_materialized_partitions(dg.AssetKey(asset)))[-n:]


def _holdout_by_version(context) -> dict[str, dict[str, float]]:
    """Holdout metrics of every registered version, from the challenger's materialisations."""
    out = {}
    for rec in context.instance.fetch_materializations(dg.AssetKey("challenger"), limit=200).records:
        md = rec.asset_materialization.metadata
        if "model_version" in md and "holdout_roc_auc" in md:
            out[str(md["model_version"].value)] = {
                "roc_auc": float(md["holdout_roc_auc"].value),
                "log_loss": float(md["holdout_log_loss"].value) if "holdout_log_loss" in md else float("nan"),
            }
    return out


def latest_complete_week(labelled_days: set[str]) -> str | None:
    """The latest weekly partition all of whose 7 days have labelled examples."""
    if not labelled_days:
        return None
    d = date.fromisoformat(max(labelled_days))
    monday = d - timedelta(days=d.weekday())
    for _ in range(60):
        if all(x in labelled_days for x in week_days(monday.isoformat())) and monday.isoformat() >= get_settings().start:
            return monday.isoformat()
        monday -= timedelta(days=7)
    return None


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests retraining for the latest complete week when live performance or drift "
                "says the champion decayed (MLOPS_HEALTH_* settings).",
)
def model_health_sensor(context: dg.SensorEvaluationContext):
    from mlops_assets.lib.health import HealthPolicy, assess
    from mlops_assets.lib.storage import Lake

    policy = HealthPolicy.from_settings(get_settings())
    lake = Lake(get_settings().lake_uri)
    perf_days = _recent_partitions(context, "prediction_performance", policy.days)
    drift_days = _recent_partitions(context, "feature_drift", policy.days)
    perf = lake.read_many("prediction_performance", perf_days, missing_ok=True)
    drift = lake.read_many("feature_drift", drift_days, missing_ok=True)
    from mlops_assets.lib.features import CALENDAR_FEATURES

    if len(drift):
        drift = drift[~drift["feature"].isin(CALENDAR_FEATURES)]
    verdict = assess(perf.to_dict("records") if len(perf) else [], drift.to_dict("records") if len(drift) else [],
                     _holdout_by_version(context), policy)
    if not verdict.retrain:
        return dg.SkipReason(f"healthy over {perf_days[:1]}..{perf_days[-1:]}: {verdict.reason}")
    week = latest_complete_week(set(context.instance.get_materialized_partitions(dg.AssetKey("training_examples"))))
    if week is None:
        return dg.SkipReason(f"decayed ({verdict.reason}) but no complete week of labelled examples to train on")
    context.log.info(f"requesting retraining for week {week}: {verdict.reason}")
    return dg.RunRequest(
        run_key=f"retrain:{week}",  # at most one request per week partition
        partition_key=week,
        tags={"mlops/trigger": "model_health_sensor", "mlops/retrain_reason": verdict.reason[:1000],
              "mlops/health_days": ",".join(verdict.days)},
    )


def alert_payload(context: dg.RunFailureSensorContext, ui_url: str) -> dict:
    run = context.dagster_run
    failures = context.get_step_failure_events()
    steps = [e.step_key for e in failures]
    errors = []
    for e in failures:
        err = getattr(e.event_specific_data, "error", None)
        if err is not None:
            errors.append(f"{e.step_key}: {err.message.strip()[:500]}")
    return {
        "kind": "dagster_run_failure",
        "job": run.job_name,
        "run_id": run.run_id,
        "partition": run.tags.get("dagster/partition", ""),
        "trigger": run.tags.get("mlops/trigger") or run.tags.get("dagster/sensor_name") or "manual",
        "failed_steps": steps,
        "error": "\n".join(errors)[:2000] or (context.failure_event.message or "")[:2000],
        "url": f"{ui_url.rstrip('/')}/runs/{run.run_id}",
    }


# What the run status sensors below share. Runs started from the CLI (`dagster job execute -m
# mlops_assets.definitions`, `dagster asset materialize -m ...`) belong to a code location of
# that module's name, not this one's: the sensors watch every location.
_WATCH_RUNS = {"minimum_interval_seconds": max(5, INTERVAL // 2), "monitor_all_code_locations": True,
               "default_status": dg.DefaultSensorStatus.RUNNING}


@dg.run_failure_sensor(
    name="run_failure_alert",
    **_WATCH_RUNS,
    description="POSTs a JSON alert for every failed run to MLOPS_ALERT_WEBHOOK_URL (logs when unset).",
)
def run_failure_alert(context: dg.RunFailureSensorContext):
    s = get_settings()
    url = s.alert_webhook_url
    payload = alert_payload(context, s.ui_url)
    if not url:
        context.log.warning(f"run failed and MLOPS_ALERT_WEBHOOK_URL is not set; alert not sent: {json.dumps(payload)[:500]}")
        return
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        context.log.info(f"alert for run {payload['run_id']} sent to the webhook: HTTP {resp.status}")


def _trains(run: dg.DagsterRun) -> bool:
    """Whether a run trains models (and so has MLflow runs): the training job, or any run whose
    selection holds candidate models (a materialisation started from the UI)."""
    keys = run.asset_selection or set()
    return run.job_name == training_job.name or any(k.path[0] == "candidate_models" for k in keys)


def _close_mlflow_runs(context: dg.RunStatusSensorContext, what: str, status: str) -> None:
    from mlops_assets.lib import registry

    run = context.dagster_run
    if not _trains(run):
        return
    s = get_settings()
    with registry.tracking_errors():  # server down: the tick fails, saying so
        exp = registry.configure(s.tracking_uri, s.mlflow_artifact_root)
        closed = registry.close_open_runs(exp, run.run_id, f"Dagster run {run.run_id} {what}", status)
    if closed:
        context.log.info(f"run {run.run_id} {what}: ended {len(closed)} MLflow run(s) left RUNNING: {closed}")


@dg.run_failure_sensor(
    name="close_mlflow_runs_of_failed_runs",
    **_WATCH_RUNS,
    description="Ends as FAILED the MLflow runs a failed training run left RUNNING (a killed process never ends them).",
)
def close_mlflow_runs_of_failed_runs(context: dg.RunFailureSensorContext):
    _close_mlflow_runs(context, "failed", "FAILED")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    name="close_mlflow_runs_of_canceled_runs",
    **_WATCH_RUNS,
    description="Ends as KILLED the MLflow runs a canceled training run left RUNNING.",
)
def close_mlflow_runs_of_canceled_runs(context: dg.RunStatusSensorContext):
    _close_mlflow_runs(context, "was canceled", "KILLED")
