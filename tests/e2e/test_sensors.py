"""The landing sensor under the real daemon: `dagster dev` on a free port, the sensor turned on
through GraphQL, days replayed into the landing zone; the right days and assets launched (days
landing together as one range run), each succeeded, none twice; a re-written file requests its
day alone; a failed run's alert reaches a real HTTP receiver."""

import os
import time

import pandas as pd
from dagster import DagsterRunStatus, RunsFilter

from mlops_assets.lib.source import replay
from tests.e2e.harness import Receiver, dagster_dev, instance, wait_for

DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
L = ("raw_flights", "raw_weather", "flight_features")
O = ("flight_outcomes", "training_examples")


def sensor_runs(home):
    """{(first day, last day, assets): [status, ...]} of the landing sensor's runs."""
    with instance(home) as inst:
        runs = inst.get_runs(RunsFilter(tags={"mlops/trigger": "landing_zone_sensor"}))
    out = {}
    for r in runs:
        first = r.tags.get("dagster/partition") or r.tags["dagster/asset_partition_range_start"]
        last = r.tags.get("dagster/partition") or r.tags["dagster/asset_partition_range_end"]
        assets = tuple(a for a in L + O if any(k.to_user_string() == a for k in r.asset_selection))
        out.setdefault((first, last, assets), []).append(r.status)
    return out


def finished(home, expected: dict):
    runs = sensor_runs(home)
    return all(sum(s in DONE for s in runs.get(k, [])) >= n for k, n in expected.items())


def test_landing_sensor_launches_each_day_once_in_ranges_and_alerts_on_failure(tmp_path):
    home = tmp_path / "mlops"
    landing = home / "landing"
    replay(landing, "2013-01-03", "2013-01-01")
    with Receiver() as rx, dagster_dev(home, MLOPS_SENSOR_INTERVAL_S=5, MLOPS_ALERT_WEBHOOK_URL=rx.url,
                                       MLOPS_UI_URL="http://ui.example") as dev:
        assert dev.start_sensor("landing_zone_sensor") == "RUNNING"
        # two labelled days in one range run; the third day has no outcomes yet
        want = {("2013-01-01", "2013-01-02", L + O): 1, ("2013-01-03", "2013-01-03", L): 1}
        wait_for(lambda: finished(home, want), 300, what=f"sensor runs {want}")

        # A new day lands: its feeds, and the outcomes of the day before (that day's labels only).
        replay(landing, "2013-01-04", "2013-01-04", outcomes_from="2013-01-03")
        want.update({("2013-01-04", "2013-01-04", L): 1, ("2013-01-03", "2013-01-03", O): 1})
        wait_for(lambda: finished(home, want), 240, what="runs for the new day")

        # Touched but unchanged: nothing. Re-written with new content: its day, what depends on it.
        os.utime(landing / "schedules" / "2013-01-02.csv", ns=(time.time_ns(), time.time_ns()))
        sched = pd.read_csv(landing / "schedules" / "2013-01-03.csv")
        sched.loc[0, "distance"] += 1  # one flight's distance corrected upstream
        sched.to_csv(landing / "schedules" / "2013-01-03.csv", index=False)
        want[("2013-01-03", "2013-01-03", ("raw_flights", "flight_features") + O)] = 1
        wait_for(lambda: finished(home, want), 240, what="the re-written day")

        # A bad file: the run fails clearly, and the alert reaches the receiver.
        replay(landing, "2013-01-05", "2013-01-05")
        bad = pd.read_csv(landing / "schedules" / "2013-01-05.csv").drop(columns=["dest"])
        bad.to_csv(landing / "schedules" / "2013-01-05.csv", index=False)
        want[("2013-01-05", "2013-01-05", L)] = 1
        wait_for(lambda: finished(home, want), 240, what="the bad day's run")
        alert = wait_for(lambda: [p for p in rx.posts if p["json"]["partition"] == "2013-01-05"], 90,
                         what="the failure alert")[0]["json"]
        time.sleep(12)  # two more sensor ticks: nothing else may be launched

    runs = sensor_runs(home)
    assert {k: len(v) for k, v in runs.items()} == want  # exactly the expected runs, no duplicates
    for key, statuses in runs.items():
        expected = DagsterRunStatus.FAILURE if key[0] == "2013-01-05" else DagsterRunStatus.SUCCESS
        assert all(s == expected for s in statuses), (key, statuses)
    # The alert names the job, run, failed step, error (file, partition, column) and the UI link.
    assert alert["trigger"] == "landing_zone_sensor"
    assert "raw_flights" in alert["failed_steps"]
    assert "column 'dest'" in alert["error"] and "2013-01-05" in alert["error"]
    assert alert["url"] == f"http://ui.example/runs/{alert['run_id']}"
    with instance(home) as inst:
        failed = inst.get_run_by_id(alert["run_id"])
        assert failed.status == DagsterRunStatus.FAILURE and failed.job_name == alert["job"]
    # the lake has the good days and not the bad one
    assert (home / "lake" / "raw_flights" / "2013-01-04.parquet").exists()
    assert not (home / "lake" / "raw_flights" / "2013-01-05.parquet").exists()
    assert (home / "lake" / "training_examples" / "2013-01-03.parquet").exists()
