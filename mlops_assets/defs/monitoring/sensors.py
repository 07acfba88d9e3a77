"""Sensors that watch the live model and the platform.

* ``model_health_sensor``: carries out the retraining policy (``MLOPS_RETRAIN_POLICY``,
  ``lib.health.decide``): cold start when nothing serves yet, then every complete week
  (``weekly``), never (``frozen``), or when the verdict on the champion's own last labelled days
  says it decayed (``health``, ``lib.health.assess``). Simulated time is the data's: a week is
  complete when its seven days are labelled. The run's tags say why; at most one request per
  week. Each verdict is recorded as an observation of that day's ``prediction_performance``.
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
from mlops_assets.defs.jobs import shadow_promotion_job, training_job
from mlops_assets.defs.observed import IN_FLIGHT, MATERIALIZATION, serving
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
from mlops_assets.settings import get_settings


def _labelled_window(lake, days: list[str]):
    """The champion's labelled predictions of ``days`` (those with both), and their drift rows."""
    import pandas as pd

    from mlops_assets.lib.drift import alarm_rows
    from mlops_assets.lib.features import CALENDAR_FEATURES, LABEL

    frames, drift = [], []
    for day in days:
        if lake.has("flight_delay_predictions", day) and lake.has("training_examples", day):
            pred = lake.read("flight_delay_predictions", day, columns=["flight_id", "delay_probability", "model_version"])
            ex = lake.read("training_examples", day, columns=["flight_id", LABEL])
            j = pred.merge(ex, on="flight_id", validate="one_to_one")
            frames.append(j[j[LABEL].notna()].assign(date=day))
        if lake.has("feature_drift", day):
            d = alarm_rows(lake.read("feature_drift", day))
            drift += d.loc[~d["feature"].isin(CALENDAR_FEATURES),
                           ["date", "feature", "kind", "psi", "alarm", "importance"]].to_dict("records")
    scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["flight_id", "delay_probability", "model_version", LABEL, "date"])
    return scored, drift


def _train_key(week: str, attempt: int) -> str:
    return f"train:{week}" + (f":retry{attempt}" if attempt else "")


def _verdict_metadata(verdict) -> dict:
    md = {"health_verdict": verdict.status, "health_reason": verdict.reason[:1000],
          "health_model_version": verdict.version or "none", "health_days": ",".join(verdict.days)}
    md.update({f"health_{k}": dg.MetadataValue.float(float(v)) for k, v in verdict.metrics.items()})
    return md


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Carries out MLOPS_RETRAIN_POLICY: cold start (every policy), then every complete week "
                "(weekly) or when the model-health verdict says the champion decayed (health); the verdict "
                "of each newly labelled day is recorded on that day's prediction_performance.",
)
def model_health_sensor(context: dg.SensorEvaluationContext, lake: LakeStorage):
    from mlops_assets.lib.health import (HealthPolicy, HealthVerdict, assess, decide, first_full_week,
                                         latest_complete_week)
    from mlops_assets.lib.landing import days_of_range

    s = get_settings()
    inst = context.instance
    cursor = json.loads(context.cursor) if context.cursor else {}
    if cursor.get("v") != 3:
        cursor = {"v": 3, "labelled": [], "examples_id": None, "performance_id": None, "serving_id": None,
                  "verdict": None, "requested": {}}
    # Labelled days: only the materialisations since the last tick are read.
    new = inst.get_latest_storage_id_by_partition(dg.AssetKey("training_examples"), MATERIALIZATION,
                                                  after_cursor=cursor["examples_id"])
    labelled = set(cursor["labelled"]) | set(new)
    if new:
        cursor["examples_id"] = max([*new.values(), cursor["examples_id"] or 0])
    if labelled:  # five weeks are enough to find the latest complete one
        oldest = (date.fromisoformat(max(labelled)) - timedelta(days=35)).isoformat()
        labelled = {d for d in labelled if d >= oldest}
    cursor["labelled"] = sorted(labelled)
    complete = latest_complete_week(labelled, not_before=first_full_week(s.start, s.train_weeks))

    srv = serving(inst)
    policy = HealthPolicy.from_settings(s)
    events = []
    perf_new = inst.get_latest_storage_id_by_partition(dg.AssetKey("prediction_performance"), MATERIALIZATION,
                                                       after_cursor=cursor["performance_id"])
    if perf_new:
        cursor["performance_id"] = max([*perf_new.values(), cursor["performance_id"] or 0])
    known = [*perf_new, *([cursor["verdict"]["last"]] if cursor["verdict"] else [])]
    if srv is not None and known and (perf_new or srv.storage_id != cursor["serving_id"]):
        last = max(known)
        first = (date.fromisoformat(last) - timedelta(days=policy.days - 1)).isoformat()
        scored, drift = _labelled_window(lake.lake(), days_of_range(first, last))
        verdict = assess(scored, srv.version, srv.holdout, drift, policy)
        cursor["serving_id"] = srv.storage_id
        cursor["verdict"] = {"status": verdict.status, "reasons": list(verdict.reasons), "days": list(verdict.days),
                             "version": verdict.version, "last": last}
        events.append(dg.AssetObservation(asset_key="prediction_performance", partition=last,
                                          metadata=_verdict_metadata(verdict)))
        context.log.info(f"v{srv.version} on {last}: {verdict.reason}")
    v = cursor["verdict"]
    verdict = HealthVerdict(v["status"], tuple(v["reasons"]), tuple(v["days"]), v["version"]) \
        if v and srv is not None and v["version"] == srv.version else None

    decision = decide(s.retrain_policy, complete_week=complete, champion_week=srv.week if srv else None,
                      verdict=verdict)
    requests, skip = [], None
    requested = dict(cursor["requested"])
    attempt = 0
    if decision is not None and decision.week in requested:
        # asked already; ask again only if that run died without a step failing (a killed worker)
        key = _train_key(decision.week, requested[decision.week])
        recs = inst.get_run_records(dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
        run = recs[0].dagster_run if recs else None
        if (run is not None and run.is_finished and run.status != dg.DagsterRunStatus.SUCCESS
                and run.tags.get("dagster/failure_reason") != "STEP_FAILURE" and requested[decision.week] < 2):
            attempt = requested[decision.week] + 1
        else:
            skip = f"{s.retrain_policy}: week {decision.week} already requested"
    if decision is None:
        skip = (f"{s.retrain_policy}: nothing to train (latest complete week {complete}, "
                f"serving {'v' + srv.version if srv else 'nothing'}; {verdict.reason if verdict else 'no verdict yet'})")
    elif skip is None and inst.get_run_records(dg.RunsFilter(job_name=training_job.name, statuses=IN_FLIGHT,
                                                             tags={"mlops/trigger": "model_health_sensor"}), limit=1):
        skip = f"{s.retrain_policy}: week {decision.week} is due; waiting for the training run in flight"
    elif skip is None:
        requested[decision.week] = attempt
        cursor["requested"] = dict(sorted(requested.items())[-10:])
        context.log.info(f"requesting training for week {decision.week} ({decision.kind}): {decision.reason}")
        requests.append(dg.RunRequest(
            run_key=_train_key(decision.week, attempt),  # at most one training per week partition
            partition_key=decision.week,
            tags={"mlops/trigger": "model_health_sensor", "mlops/retrain_policy": s.retrain_policy,
                  "mlops/retrain_kind": decision.kind, "mlops/retrain_reason": decision.reason[:1000],
                  "mlops/health_days": ",".join(verdict.days) if verdict and decision.kind == "health" else ""},
        ))
    return dg.SensorResult(run_requests=requests, skip_reason=skip, cursor=json.dumps(cursor), asset_events=events)


@dg.sensor(
    job=shadow_promotion_job,
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="With MLOPS_SHADOW_PROMOTE_DAYS=N (N >= 1): once the shadow challenger has been significantly "
                "better than the champion on the same flights over its latest N labelled days, runs "
                "shadow_promotion_job (which re-decides, validates serving, promotes and deploys).",
)
def shadow_promotion_sensor(context: dg.SensorEvaluationContext, lake: LakeStorage, mlflow: MlflowTracking):
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib import shadow as shadow_lib

    s = get_settings()
    if s.shadow_promote_days < 1:
        return dg.SkipReason("MLOPS_SHADOW_PROMOTE_DAYS is 0: shadow challengers are compared, never promoted")
    inst = context.instance
    after = int(context.cursor) if context.cursor else None
    new = inst.get_latest_storage_id_by_partition(dg.AssetKey("prediction_performance"), MATERIALIZATION,
                                                  after_cursor=after)
    if not new:
        return dg.SkipReason("no newly labelled day")
    context.update_cursor(str(max([*new.values(), after or 0])))
    srv = serving(inst)
    with tracking.tracking_errors():
        mlflow.experiment_id()  # the resource configures MLflow for this process
        cand = registry.alias_version(registry.CHALLENGER)
    if srv is None or cand is None or str(cand.version) == srv.version:
        return dg.SkipReason("no shadow challenger beside the serving champion")
    by_day = shadow_lib.load_days(lake.lake(), shadow=str(cand.version), champion=srv.version,
                                  last=s.shadow_promote_days)
    decision = shadow_lib.decide(by_day, shadow=str(cand.version), champion=srv.version, days=s.shadow_promote_days,
                                 min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance)
    if not decision.promote:
        return dg.SkipReason(decision.reason)
    context.log.info(decision.reason)
    return dg.RunRequest(run_key=f"shadow:{cand.version}:over:{srv.version}",
                         tags={"mlops/trigger": "shadow_promotion_sensor", "mlops/shadow_decision": decision.reason[:1000]})


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
    from mlops_assets.lib import tracking

    run = context.dagster_run
    if not _trains(run):
        return
    s = get_settings()
    with tracking.tracking_errors():  # server down: the tick fails, saying so
        exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        closed = tracking.close_open_runs(exp, run.run_id, f"Dagster run {run.run_id} {what}", status)
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
