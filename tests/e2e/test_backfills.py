"""Both CLI backfill commands against the local instance (runs executed by the real daemon)."""

import subprocess

import dagster as dg

from mlops_assets.lib.source import replay
from tests.e2e.harness import BIN, ROOT, dagster_dev, instance, service_env, wait_for

DATA = ["raw_flights", "raw_weather", "flight_outcomes", "flight_features", "training_examples"]


def materialized(home, asset):
    with instance(home) as inst:
        return set(inst.get_materialized_partitions(dg.AssetKey(asset)))


def _finished(home) -> bool:
    with instance(home) as inst:
        runs = inst.get_runs(dg.RunsFilter(job_name="ingestion_job"))
    return len(runs) == 2 and all(r.is_finished for r in runs)


def test_range_backfill_in_one_run_and_job_backfill_one_run_per_partition(tmp_path):
    from mlops_assets.settings import DAGSTER_YAML

    home = tmp_path / "mlops"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    replay(home / "landing", "2013-01-06", "2013-01-01")
    env = service_env(home)

    # 1. A single-run range backfill: every asset of both groups, three days, one run (`dg launch`,
    #    as the README shows it; it supersedes `dagster asset materialize`), on the multiprocess
    #    executor (a process per step, forked from the preloaded forkserver: what a machine with 4
    #    or more CPUs runs by default).
    out = subprocess.run([str(BIN / "dg"), "launch", "-m", "mlops_assets.definitions",
                          "--assets", "group:ingestion or group:features",
                          "--partition-range", "2013-01-01...2013-01-03"],
                         env={**env, "MLOPS_EXECUTOR": "multiprocess"}, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for asset in DATA:
        assert materialized(home, asset) == {"2013-01-01", "2013-01-02", "2013-01-03"}, asset
    with instance(home) as inst:
        (run,) = inst.get_runs()
        events = [e.dagster_event for e in inst.all_logs(run.run_id) if e.dagster_event]
        # each step in a process of its own: the multiprocess executor's step workers
        workers = {e.step_key for e in events if e.event_type_value == "STEP_WORKER_STARTED"}
        steps = {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
        assert len(steps) == len(DATA) and workers == steps, (workers, steps)

    # 2. A job backfill: one run per partition, queued, then executed by the daemon.  It names the
    #    workspace, so that the daemon (which serves workspace.yaml) finds the runs' code location.
    out = subprocess.run([str(BIN / "dagster"), "job", "backfill", "-w", str(ROOT / "workspace.yaml"),
                          "-j", "ingestion_job", "--from", "2013-01-04", "--to", "2013-01-05", "--noprompt"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with instance(home) as inst:
        queued = inst.get_runs(dg.RunsFilter(job_name="ingestion_job"))
    assert sorted(r.tags["dagster/partition"] for r in queued) == ["2013-01-04", "2013-01-05"]
    with dagster_dev(home):
        wait_for(lambda: all(materialized(home, a) >= {"2013-01-04", "2013-01-05"}
                             for a in ("raw_flights", "raw_weather", "flight_outcomes")), 240,
                 what="the backfill's runs")
        # the files land before their runs finish: stop the daemon only once both runs are done
        wait_for(lambda: _finished(home), 120, what="both backfill runs to finish")
    with instance(home) as inst:
        runs = inst.get_runs(dg.RunsFilter(job_name="ingestion_job"))
        failures = [e.message for r in runs for e in inst.all_logs(r.run_id)
                    if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")]
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS} and len(runs) == 2, failures
        assert len({r.tags["dagster/backfill"] for r in runs}) == 1
    assert (home / "lake" / "raw_weather" / "2013-01-05.parquet").exists()
    assert "2013-01-04" not in materialized(home, "flight_features")  # ingestion_job is ingestion only
