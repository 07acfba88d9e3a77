"""The torch trials' GPU pod config survives every way a training run can start.

Job-level ``dagster-k8s/config`` tags do not reach ``k8s_job_executor`` step pods and users report
them lost on sensor/backfill paths, so ours live on the ops.  Here real runs of ``training_job`` are
created by each launch path against `dagster dev` (webserver + daemon): a CLI backfill, a backfill
and a launch from the UI's GraphQL API, and the model-health sensor (its cold start) under the
daemon; for each,
the torch step's Kubernetes Job is built with dagster-k8s's code from the run's stored plan and
validated against the Kubernetes schema.  The instance
allows no run to start (``max_concurrent_runs: 0``), so every run stays queued with the execution
plan it would run, and that plan's steps are what the k8s executor turns into pods.  The sensor's
input (a labelled week, with nothing deployed yet) is recorded by hand here: the sensor on real
data is tested in tests/assets/test_model_health.py and tests/e2e/test_year.py.
"""

import json
import subprocess

import dagster as dg
import kubernetes_validate
import pandas as pd

from mlops_assets.defs.k8s import render_step_job

from tests.e2e.harness import BIN, LOCATION, REPOSITORY, ROOT, dagster_dev, instance, service_env, wait_for

TORCH_STEP = "candidate_models__torch_mlp.train_torch_mlp_trial[?]"
PATHS = {"cli_backfill": "2013-01-07", "sensor": "2013-01-14", "ui_backfill": "2013-01-21", "ui_launch": "2013-01-28"}


def _fabricate_labelled_week(home):
    with instance(home) as inst:
        for day in pd.date_range("2013-01-14", "2013-01-20").strftime("%Y-%m-%d"):
            inst.report_runless_asset_event(dg.AssetMaterialization("training_examples", partition=day))


def _training_runs(home):
    with instance(home) as inst:
        return {r.tags.get("dagster/partition"): r for r in inst.get_runs(dg.RunsFilter(job_name="training_job"))}


def test_gpu_step_config_survives_every_launch_path(tmp_path):
    from mlops_assets.settings import DAGSTER_YAML

    home = tmp_path / "mlops"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(
        DAGSTER_YAML.replace("max_concurrent_runs: 2", "max_concurrent_runs: 0"))
    _fabricate_labelled_week(home)
    with dagster_dev(home, MLOPS_SENSOR_INTERVAL_S=5) as dev:
        # CLI backfill
        out = subprocess.run([str(BIN / "dagster"), "job", "backfill", "-w", str(ROOT / "workspace.yaml"), "-j",
                              "training_job", "--partitions", PATHS["cli_backfill"], "--noprompt"],
                             env=service_env(home), cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        # UI backfill (the Launch backfill dialog's mutation)
        r = dev.graphql("""mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
                              __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
                        {"p": {"selector": {"partitionSetName": "training_job_partition_set", "repositorySelector": repo},
                               "partitionNames": [PATHS["ui_backfill"]]}})["launchPartitionBackfill"]
        assert r["__typename"] == "LaunchBackfillSuccess", r
        # UI launchpad
        r = dev.graphql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                              __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                        {"p": {"selector": {**repo, "jobName": "training_job"}, "runConfigData": {},
                               "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PATHS["ui_launch"]}]}}}
                        )["launchRun"]
        assert r["__typename"] == "LaunchRunSuccess", r
        # Sensor under the daemon
        assert dev.start_sensor("model_health_sensor") == "RUNNING"
        # a backfill's run is created NOT_STARTED and then submitted: wait until every run is queued
        runs = wait_for(lambda: (lambda rs: rs if set(PATHS.values()) <= set(rs) and all(
            r.status == dg.DagsterRunStatus.QUEUED for r in rs.values()) else None)(_training_runs(home)),
                        180, what="a queued training run from every path")

    assert runs[PATHS["sensor"]].tags["mlops/trigger"] == "model_health_sensor"
    assert runs[PATHS["sensor"]].tags["mlops/retrain_kind"] == "cold_start"
    assert runs[PATHS["cli_backfill"]].tags.get("dagster/backfill")
    assert runs[PATHS["ui_backfill"]].tags.get("dagster/backfill")
    with instance(home) as inst:
        for path, partition in PATHS.items():
            run = runs[partition]
            assert run.status == dg.DagsterRunStatus.QUEUED, (path, run.status)
            plan = inst.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            steps = {s.key: s for s in plan.steps}
            assert TORCH_STEP in steps, (path, sorted(steps))
            for key, step in steps.items():
                cfg = json.loads(step.tags["dagster-k8s/config"])
                res = cfg["container_config"]["resources"]
                gpu = "nvidia.com/gpu" in res["limits"]
                assert gpu == (key == TORCH_STEP), (path, key)
                if gpu:
                    assert res["requests"]["nvidia.com/gpu"] == "1" and step.pool == "gpu"
                    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
                        cfg["pod_spec_config"]["tolerations"]
                assert cfg["container_config"]["security_context"]["run_as_non_root"] is True
            # The Job the k8s executor would create for the torch step of this run, validated.
            job = render_step_job(steps[TORCH_STEP].tags, TORCH_STEP, run_id=run.run_id)
            kubernetes_validate.validate(job, desired_version="1.33.0", strict=True)
            pod = job["spec"]["template"]["spec"]
            assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1", path
            assert pod["securityContext"]["runAsNonRoot"] is True, path
