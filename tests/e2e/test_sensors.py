"""Sensors under the real daemon: `dagster dev` on a free port, sensors turned on through GraphQL,
days replayed into the landing zone; the right partitions launched, succeeded, never twice; a
failed run's alert reaches a real HTTP receiver."""

import pandas as pd
from dagster import DagsterRunStatus, RunsFilter

from mlops_assets.lib.source import replay
from tests.e2e.harness import Receiver, dagster_dev, instance, wait_for

DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def sensor_runs(home):
    with instance(home) as inst:
        runs = inst.get_runs(RunsFilter(tags={"mlops/trigger": ["landing_zone_sensor", "outcomes_sensor"]}))
    return [(r.tags["mlops/trigger"], r.tags.get("dagster/partition"), r.status, r.run_id) for r in runs]


def finished(home, expected: dict):
    """True when every (sensor, day) in ``expected`` has that many finished runs."""
    runs = sensor_runs(home)
    counts = {}
    for trig, day, status, _ in runs:
        if status in DONE:
            counts[(trig, day)] = counts.get((trig, day), 0) + 1
    return all(counts.get(k, 0) >= n for k, n in expected.items())


def test_sensors_launch_each_day_once_and_alert_on_failure(tmp_path):
    home = tmp_path / "mlops"
    landing = home / "landing"
    replay(landing, "2013-01-03", "2013-01-01")
    with Receiver() as rx, dagster_dev(home, MLOPS_SENSOR_INTERVAL_S=5, MLOPS_ALERT_WEBHOOK_URL=rx.url,
                                       MLOPS_UI_URL="http://ui.example") as dev:
        assert dev.start_sensor("landing_zone_sensor") == "RUNNING"
        assert dev.start_sensor("outcomes_sensor") == "RUNNING"
        L, O = "landing_zone_sensor", "outcomes_sensor"
        want = {(L, "2013-01-01"): 1, (L, "2013-01-02"): 1, (L, "2013-01-03"): 1,
                (O, "2013-01-01"): 1, (O, "2013-01-02"): 1}
        wait_for(lambda: finished(home, want), 300, what=f"sensor runs {want}")

        # A new day lands: its feeds and the outcomes of the day before.
        replay(landing, "2013-01-04", "2013-01-01")
        want.update({(L, "2013-01-04"): 1, (O, "2013-01-03"): 1})
        wait_for(lambda: finished(home, want), 240, what="runs for the new day")

        # Touched but unchanged: nothing.  Re-written with new content: picked up again.
        import os
        import time

        os.utime(landing / "schedules" / "2013-01-02.csv", ns=(time.time_ns(), time.time_ns()))
        sched = pd.read_csv(landing / "schedules" / "2013-01-03.csv")
        sched.iloc[:-1].to_csv(landing / "schedules" / "2013-01-03.csv", index=False)  # a flight removed
        want[(L, "2013-01-03")] = 2
        wait_for(lambda: finished(home, want), 240, what="the re-written day")

        # A bad file: the run fails clearly, and the alert reaches the receiver.
        replay(landing, "2013-01-05", "2013-01-05")
        bad = pd.read_csv(landing / "schedules" / "2013-01-05.csv").drop(columns=["dest"])
        bad.to_csv(landing / "schedules" / "2013-01-05.csv", index=False)
        want[(L, "2013-01-05")] = 1
        wait_for(lambda: finished(home, want), 240, what="the bad day's run")
        alert = wait_for(lambda: [p for p in rx.posts if p["json"]["partition"] == "2013-01-05"], 90,
                         what="the failure alert")[0]["json"]
        time.sleep(12)  # two more sensor ticks: nothing else may be launched

    runs = sensor_runs(home)
    by_key = {}
    for trig, day, status, run_id in runs:
        by_key.setdefault((trig, day), []).append(status)
    assert {k: len(v) for k, v in by_key.items()} == want  # exactly the expected runs, no duplicates
    for key, statuses in by_key.items():
        expected = DagsterRunStatus.FAILURE if key == (L, "2013-01-05") else DagsterRunStatus.SUCCESS
        assert all(s == expected for s in statuses), (key, statuses)
    # The alert names the job, run, failed step, error (file, partition, column) and the UI link.
    assert alert["trigger"] == L
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
