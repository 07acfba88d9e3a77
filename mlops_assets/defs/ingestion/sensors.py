"""Sensors on the landing zone: new or changed feed files request exactly their day's partition.

* ``landing_zone_sensor``: a day whose schedule *and* weather files are both present requests
  ingestion + features for that day (and, once a champion is deployed, its predictions and drift).
* ``outcomes_sensor``: a day whose outcomes landed (a day later) requests ``flight_outcomes``,
  ``training_examples`` and, when the day was scored, ``prediction_performance``.

The cursor keeps a content fingerprint per file: a file re-written with new content is picked up
again, an unchanged (or merely touched) one never twice.  Run keys carry the fingerprint too, so
Dagster itself drops a duplicate request.
"""

import json

import dagster as dg

from mlops_assets.settings import get_settings

INTERVAL = get_settings().sensor_interval_s
MAX_RUNS_PER_TICK = 20

DAY_ASSETS = ["raw_flights", "raw_weather", "flight_features"]
SCORING_ASSETS = ["flight_delay_predictions", "feature_drift"]
OUTCOME_ASSETS = ["flight_outcomes", "training_examples"]


def _materialized(context, asset: str) -> set[str]:
    return set(context.instance.get_materialized_partitions(dg.AssetKey(asset)))


def _has_materialization(context, asset: str) -> bool:
    return context.instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None


def _in_span(day: str) -> bool:
    s = get_settings()
    return s.start <= day < s.end


def _feed_sensor(name: str, feeds: list[str], description: str, plan):
    @dg.sensor(
        name=name,
        target=dg.AssetSelection.assets(*DAY_ASSETS, *SCORING_ASSETS, *OUTCOME_ASSETS, "prediction_performance"),
        minimum_interval_seconds=INTERVAL,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext):
        from mlops_assets.lib.health import scan_days

        cursor = json.loads(context.cursor) if context.cursor else {"files": {}, "requested": {}}
        days, files = scan_days(get_settings().landing_uri, feeds, cursor["files"])
        requests, skipped = [], []
        for day, fp in days.items():
            if not _in_span(day) or cursor["requested"].get(day) == fp:
                continue
            if len(requests) >= MAX_RUNS_PER_TICK:
                break
            assets = plan(context, day)
            if assets is None:  # not ready yet (e.g. its features are not materialised): next tick
                skipped.append(day)
                continue
            cursor["requested"][day] = fp
            requests.append(dg.RunRequest(
                run_key=f"{name}:{day}:{fp}",
                partition_key=day,
                asset_selection=[dg.AssetKey(a) for a in assets],
                tags={"mlops/trigger": name, "mlops/feed_fingerprint": fp},
            ))
        cursor["files"] = files
        if skipped:
            context.log.info(f"{name}: waiting on {len(skipped)} day(s) not ready yet: {skipped[:5]}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return _sensor


def _landing_plan(context, day):
    assets = list(DAY_ASSETS)
    if _has_materialization(context, "model_deployment"):
        assets += SCORING_ASSETS
    return assets


def _outcomes_plan(context, day):
    if day not in _materialized(context, "flight_features"):
        return None
    assets = list(OUTCOME_ASSETS)
    if day in _materialized(context, "flight_delay_predictions"):
        assets.append("prediction_performance")
    return assets


landing_zone_sensor = _feed_sensor(
    "landing_zone_sensor", ["schedules", "weather"],
    "New or changed schedule + weather files for a day -> ingestion, features (and scoring once a "
    "champion is deployed) for exactly that day.", _landing_plan)
outcomes_sensor = _feed_sensor(
    "outcomes_sensor", ["outcomes"],
    "A day's outcomes landed -> flight_outcomes, training_examples and, if the day was scored, "
    "prediction_performance for that day.", _outcomes_plan)
