"""A training run started from the CLI and killed mid-trial (SIGKILL: nothing of it can clean up)
leaves its MLflow runs RUNNING; once Dagster marks the run failed (what run monitoring does when
it finds a dead run worker) or canceled (a forced termination), the `close_mlflow_runs_of_*_runs`
sensors, under the real daemon, end exactly that run's MLflow runs and say why, and
`run_failure_alert` sends its alert (CLI runs belong to another code location name: the sensors
watch all of them). Other MLflow runs are left alone."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, RunsFilter

from mlops_assets.lib import tracking
from mlops_assets.settings import get_settings
from tests.e2e.harness import LOCATION, REPOSITORY, Receiver, dagster_dev, instance, service_env, wait_for
from tests.reliability.helpers import module_home

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _runs(exp: str, query: str):
    from mlflow import MlflowClient

    return MlflowClient().search_runs([exp], query, max_results=100)


def _sensor_ticked(dev, sensor: str) -> bool:
    data = dev.graphql(
        """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
             ... on Sensor { sensorState { status ticks(limit: 1) { status } } } } }""",
        {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": sensor}},
    )["sensorOrError"]["sensorState"]
    return data["status"] == "RUNNING" and bool(data["ticks"])


@pytest.mark.parametrize("outcome", ["failed", "canceled"])
def test_a_killed_training_run_leaves_no_mlflow_run_open(tmp_path_factory, outcome):
    sensor = f"close_mlflow_runs_of_{outcome}_runs"
    with module_home(tmp_path_factory, f"orphans-{outcome}", days=("2013-01-01", "2013-01-20")) as h:
        s = get_settings()
        exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        # an MLflow run of another Dagster run, still running: must stay as it is
        bystander = tracking.parent_run_id(exp, "another-dagster-run", job_name="training_job")
        with Receiver() as rx, dagster_dev(h, MLOPS_SENSOR_INTERVAL_S=2, MLOPS_ALERT_WEBHOOK_URL=rx.url) as dev:
            # a run status sensor starts from the events after its first tick
            wait_for(lambda: _sensor_ticked(dev, sensor) and _sensor_ticked(dev, "run_failure_alert"), 120,
                     interval=1, what=f"a first tick of {sensor} and run_failure_alert")
            proc = subprocess.Popen(
                [str(BIN / "dagster"), "job", "execute", "-m", "mlops_assets.definitions", "-j", "training_job",
                 "--tags", '{"dagster/partition": "2013-01-14"}'],
                cwd=ROOT, env=service_env(h), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            try:
                wait_for(lambda: proc.poll() is not None or _runs(exp, "tags.mlops_role = 'trial' and attributes.status = 'RUNNING'"),
                         300, interval=0.2, what="a trial run in MLflow")
                assert proc.poll() is None, "the training run ended before a trial could be caught"
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

            with instance(h) as inst:
                (run,) = inst.get_runs(RunsFilter(job_name="training_job"))
                assert run.status == DagsterRunStatus.STARTED  # killed: nothing marked it finished
                left_open = _runs(exp, f"tags.dagster_run_id = '{run.run_id}' and attributes.status = 'RUNNING'")
                roles = sorted(r.data.tags.get("mlops_role") for r in left_open)
                assert "parent" in roles and "trial" in roles, roles
                if outcome == "failed":  # what run monitoring does when it finds the run worker gone
                    inst.report_run_failed(run, message="run worker killed (SIGKILL)")
                else:  # what a forced termination in the UI does
                    inst.report_run_canceled(run, message="terminated by hand")

            def closed():
                runs = [_runs(exp, f"attributes.run_id = '{r.info.run_id}'")[0] for r in left_open]
                return runs if all(r.info.status != "RUNNING" for r in runs) else None

            done = wait_for(closed, 120, interval=1, what="the sensor to end the killed run's MLflow runs")
            if outcome == "failed":
                alert = wait_for(lambda: [p["json"] for p in rx.posts if p["json"]["run_id"] == run.run_id], 60,
                                 interval=1, what="the failure alert of the CLI run")[0]
                assert alert["job"] == "training_job" and alert["partition"] == "2013-01-14"
                assert "run worker killed" in alert["error"]

        status, said = {"failed": ("FAILED", "failed"), "canceled": ("KILLED", "was canceled")}[outcome]
        assert {r.info.status for r in done} == {status}
        assert all(r.data.tags["mlops_closed_reason"] == f"Dagster run {run.run_id} {said}" for r in done)
        assert not _runs(exp, f"tags.dagster_run_id = '{run.run_id}' and attributes.status = 'RUNNING'")
        assert _runs(exp, f"attributes.run_id = '{bystander}'")[0].info.status == "RUNNING"
        with instance(h) as inst:
            assert inst.get_run_by_id(run.run_id).status == {
                "failed": DagsterRunStatus.FAILURE, "canceled": DagsterRunStatus.CANCELED}[outcome]
