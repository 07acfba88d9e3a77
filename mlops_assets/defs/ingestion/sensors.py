"""The landing zone sensor: feed files that are new or changed request exactly the daily assets
they make due, for exactly their days (``lib.landing.plan``).

The identity of a day's data lives with its materialisations: each ingestion materialisation
records the ``source_sha256`` of the file it read, whoever launched it (this sensor, a CLI
backfill, the demo). A day is requested only when a file differs from what its latest
materialisation recorded, so a sensor turned on over a backfilled history requests nothing, and
a re-written file requests its day alone. The cursor only saves work: the files' fingerprints
(an unchanged file costs one stat), the days requested and not yet settled, the days whose run
failed (asked again only once one of their files changes: no retry loop on a bad file), and
which deployment the last tick saw (a new one scores the days after its data).

Days with the same assets due are requested as one range run each (a catch-up after an outage,
or a week landing at once); a range whose run failed is asked again day by day, so one bad file
holds back only its own day. Run keys carry the files' fingerprints: Dagster never launches the
same request twice, even after a daemon restart in the middle of a tick.
"""

import json

import dagster as dg

from mlops_assets.defs.observed import busy_days, latest_records, materialised, serving
from mlops_assets.defs.resources import LandingZone
from mlops_assets.lib.landing import DAILY_ASSETS, SOURCE_OF
from mlops_assets.settings import get_settings

INTERVAL = get_settings().sensor_interval_s  # read when the code location loads (the sensor definition)
MAX_RUNS_PER_TICK = 20
MAX_RETRIES = 2  # a run that died without a step failing (killed worker, cancel) is asked again
NAME = "landing_zone_sensor"
DAILY_JOBS = {"ingestion_job", "features_job", "daily_data_job", "scoring_job", "performance_job"}
CURSOR_VERSION = 3


def _day_states(instance, days):
    from mlops_assets.lib.landing import DayState

    recorded: dict[str, dict[str, str]] = {d: {} for d in days}
    have: dict[str, set[str]] = {d: set() for d in days}
    for asset in DAILY_ASSETS:
        if asset in SOURCE_OF:
            for day, rec in latest_records(instance, asset, days).items():
                have[day].add(asset)
                md = rec.asset_materialization.metadata
                if "source_sha256" in md:
                    recorded[day][asset] = str(md["source_sha256"].value)
        else:
            for day in materialised(instance, asset, days):
                have[day].add(asset)
    return {d: DayState(recorded[d], frozenset(have[d])) for d in days}


def _request(group, files, deployment, attempt: int = 0) -> dg.RunRequest:
    from mlops_assets.lib.storage import digest

    fps = [f"{d}:{files['schedules'].get(d)}:{files['weather'].get(d)}:{files['outcomes'].get(d)}" for d in group.days]
    key = f"{group.first}..{group.last}:{digest(*group.assets, *fps, deployment.version if deployment else '-')}"
    if attempt:
        key += f":retry{attempt}"
    tags = {"mlops/trigger": NAME}
    if len(group.days) > 1:  # one run for the range: every daily asset has a single-run backfill policy
        tags.update({"dagster/asset_partition_range_start": group.first, "dagster/asset_partition_range_end": group.last})
        return dg.RunRequest(run_key=key, asset_selection=[dg.AssetKey(a) for a in group.assets], tags=tags)
    return dg.RunRequest(run_key=key, partition_key=group.first,
                         asset_selection=[dg.AssetKey(a) for a in group.assets], tags=tags)


def _run_by_key(instance, run_key: str):
    recs = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return recs[0].dagster_run if recs else None


def _day_fp(files, day: str) -> str:
    return ":".join(str(files[f].get(day)) for f in ("schedules", "weather", "outcomes"))


@dg.sensor(
    name=NAME,
    target=dg.AssetSelection.assets(*DAILY_ASSETS),
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="New or changed schedule, weather or outcome files -> exactly the daily assets they make "
                "due (ingestion, features, examples; scoring and live performance once a model is "
                "deployed), for exactly those days, one run per range of days.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, landing: LandingZone):
    from mlops_assets.lib.landing import Deployment, Group, plan, scan

    s = get_settings()
    inst = context.instance
    cursor = json.loads(context.cursor) if context.cursor else {}
    fresh = cursor.get("v") != CURSOR_VERSION
    if fresh:
        cursor = {"v": CURSOR_VERSION, "files": {}, "pending": {}, "failed": {}, "waiting": [], "deployment": None}
    files, state = scan(landing.root, cursor["files"])
    in_span = {d for feed in files.values() for d in feed if s.start <= d < s.end}
    serving_now = serving(inst)
    deployment = Deployment(serving_now.version, serving_now.data_end) if serving_now else None
    if fresh:
        candidates = set(in_span)
    else:
        changed = {k.rsplit("/", 1)[-1][:-4] for k, fp in state.items()
                   if cursor["files"].get(k, {}).get("sha256") != fp["sha256"]}
        candidates = (changed | set(cursor["pending"]) | set(cursor["waiting"])) & in_span
        if serving_now and serving_now.storage_id != cursor["deployment"]:
            candidates |= {d for d in in_span if d > serving_now.data_end}
    # What became of the days requested before: in flight, done, or failed. A day whose run failed
    # waits for one of its files to change (no retry loop on a bad file); a failed range is asked
    # again day by day, so one bad day holds back only itself.
    busy = busy_days(inst, set(DAILY_ASSETS), DAILY_JOBS) if candidates else set()
    failed = {d: fp for d, fp in cursor["failed"].items() if d in in_span and fp == _day_fp(files, d)}
    split: set[str] = set()
    retry: dict[str, int] = {}
    runs: dict[str, object] = {}
    for day, req in list(cursor["pending"].items()):
        if day in busy:
            continue
        run = runs.setdefault(req["key"], _run_by_key(inst, req["key"]))
        if run is None or not run.is_finished:  # not created yet, queued or running
            busy.add(day)
            continue
        del cursor["pending"][day]
        if run.status == dg.DagsterRunStatus.SUCCESS or req["fp"] != _day_fp(files, day):
            continue
        if run.tags.get("dagster/failure_reason") != "STEP_FAILURE" and req.get("attempt", 0) < MAX_RETRIES:
            retry[day] = req.get("attempt", 0) + 1  # the run died (a killed worker, a cancel): ask again
        elif req["days"] == 1:
            failed[day] = req["fp"]  # its data failed its checks: wait for a file to change
        else:
            split.add(day)
    todo = candidates - busy - set(failed)
    requests = []
    if todo:
        for g in plan(todo, files, _day_states(inst, todo), deployment):
            parts = [Group(g.assets, (d,)) for d in g.days] if split & set(g.days) else [g]
            for part in parts:
                attempt = max((retry.get(d, 0) for d in part.days), default=0)
                req = _request(part, files, deployment, attempt)
                requests.append(req)
                for d in part.days:
                    cursor["pending"][d] = {"key": req.run_key, "fp": _day_fp(files, d), "days": len(part.days),
                                            "attempt": attempt}
    # days looked at again next tick: outcomes that wait for their day's schedule and weather (their
    # features) to land, and requests beyond this tick's share
    waiting = {d for d in candidates if files["outcomes"].get(d)
               and not (files["schedules"].get(d) and files["weather"].get(d))}
    if len(requests) > MAX_RUNS_PER_TICK:
        context.log.info(f"{len(requests)} runs due; requesting {MAX_RUNS_PER_TICK} now, the rest next tick")
        later = {r.run_key for r in requests[MAX_RUNS_PER_TICK:]}
        for d, p in list(cursor["pending"].items()):
            if p["key"] in later:
                del cursor["pending"][d]
                waiting.add(d)
        requests = requests[:MAX_RUNS_PER_TICK]
    cursor.update(files=state, failed=failed, deployment=serving_now.storage_id if serving_now else None,
                  waiting=sorted(waiting - set(failed)))
    if not requests:
        return dg.SensorResult(skip_reason=f"nothing due ({len(candidates)} day(s) looked at, {len(busy)} in flight, "
                                           f"{len(failed)} failed and unchanged)", cursor=json.dumps(cursor))
    context.log.info(f"{len(requests)} run(s) for {len(candidates)} day(s) looked at")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
