"""The demo path end to end: the real `dagster` CLI (`dg launch`), persistent SQLite instance, a
real MLflow store, on a short window; then a sabotaged challenger. (The demo runs each run's steps
in the run's process, the default on 2 CPUs; tests/e2e/test_backfills.py runs the multiprocess
executor.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BIN = Path(sys.executable).parent
W1, W2 = "2013-01-14", "2013-01-21"
SCORED = ["2013-01-28", "2013-01-29"]


@pytest.fixture(scope="module")
def demo(local_demo):
    """The demo on the embedded default (tests/conftest.py; the production-topology test runs the
    same demo on PostgreSQL, S3 and an MLflow server and compares its numbers with this run's)."""
    home, env, stdout = local_demo
    assert (W2, len(SCORED)) == ("2013-01-21", 2)  # what local_demo ran
    return home, env, stdout


def mlflow_client(home):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow/mlflow.db")
    return MlflowClient()


def dagster_runs(home):
    from dagster import DagsterInstance, RunsFilter

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as inst:
        return {r.run_id: r for r in inst.get_runs(RunsFilter())}


def test_champion_is_registered_with_lineage(demo):
    home, _, stdout = demo
    client = mlflow_client(home)
    champ = client.get_model_version_by_alias("flight_delay", "champion")
    runs = dagster_runs(home)
    run = runs[champ.tags["dagster_run_id"]]
    assert run.job_name == "training_job" and run.status.value == "SUCCESS"
    assert run.tags["dagster/partition"] == champ.tags["week"]
    assert champ.tags["data_window"] in ("2013-01-07..2013-01-20", "2013-01-14..2013-01-27")
    assert champ.tags["code_version"] and json.loads(champ.tags["params"])
    assert float(champ.tags["holdout_roc_auc"]) >= 0.60
    assert "=== summary ===" in stdout and f"champion: v{champ.version}" in stdout
    # The model takes flight_features rows as they are.
    mv = client.get_model_version("flight_delay", champ.version)
    assert mv.status == "READY"


def test_both_weeks_were_gated_and_the_second_against_a_champion(demo):
    home, _, _ = demo
    client = mlflow_client(home)
    versions = sorted(client.search_model_versions("name='flight_delay'"), key=lambda v: int(v.version))
    by_week = {v.tags["week"]: v for v in versions}
    assert set(by_week) == {W1, W2}
    assert by_week[W1].tags["champion_version_compared"] == "none" and by_week[W1].tags["gate"] == "passed"
    assert by_week[W2].tags["champion_version_compared"] == str(by_week[W1].version)
    champ = client.get_model_version_by_alias("flight_delay", "champion")
    expected = by_week[W2] if by_week[W2].tags["gate"] == "passed" else by_week[W1]
    assert str(champ.version) == str(expected.version)


def test_predictions_and_live_performance_for_the_scored_days(demo):
    home, _, _ = demo
    client = mlflow_client(home)
    champ = client.get_model_version_by_alias("flight_delay", "champion")
    for day in SCORED:
        pred = pd.read_parquet(home / "lake" / "flight_delay_predictions" / f"{day}.parquet")
        feats = pd.read_parquet(home / "lake" / "flight_features" / f"{day}.parquet")
        assert len(pred) == len(feats) and set(pred["model_version"]) == {str(champ.version)}
        assert pred["delay_probability"].between(0, 1).all()
        perf = pd.read_parquet(home / "lake" / "prediction_performance" / f"{day}.parquet")
        assert len(perf) == 1 and perf["model_version"].iloc[0] == str(champ.version)
        assert 0.5 < perf["roc_auc"].iloc[0] < 1.0 and perf["n"].iloc[0] > 500
        drift = pd.read_parquet(home / "lake" / "feature_drift" / f"{day}.parquet")
        assert {"temp", "carrier", "distance"} <= set(drift["feature"]) and drift["psi"].ge(0).all()
    manifest = (home / "deploy" / "serving.yaml").read_text()
    assert f"models:/flight_delay/{champ.version}" in manifest


def test_a_sabotaged_challenger_is_stopped_by_the_gate(demo, tmp_path):
    # this test trains a third week: on its own copy of the shared demo home
    from tests.conftest import demo_env
    from tests.helpers import copy_home

    home = tmp_path / "demo"
    copy_home(demo[0], home)
    env = demo_env(home)
    client = mlflow_client(home)
    before = str(client.get_model_version_by_alias("flight_delay", "champion").version)
    cfg = home / "shuffle.json"  # JSON is YAML
    cfg.write_text(json.dumps({"ops": {"training_set": {"config": {"shuffle_labels": True}}}}))
    out = subprocess.run([str(BIN / "dagster"), "job", "execute", "-m", "mlops_assets.definitions",
                          "-j", "training_job", "--tags", json.dumps({"dagster/partition": W2}),
                          "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=600)
    assert "Usage:" not in out.stderr
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]  # a blocked gate is a decision, not an error
    assert str(client.get_model_version_by_alias("flight_delay", "champion").version) == before
    latest = max(client.search_model_versions("name='flight_delay'"), key=lambda v: int(v.version))
    assert latest.tags["labels_shuffled"] == "True" and latest.tags["gate"] == "blocked"
    assert float(latest.tags["holdout_roc_auc"]) < 0.60
    assert str(client.get_model_version_by_alias("flight_delay", "challenger").version) == str(latest.version)
    # the floor and the paired comparison failed in that run (as warnings), champion re-applied the gate and
    # materialised nothing, so the serving deployment was not re-rendered either
    run = dagster_runs(home)[latest.tags["dagster_run_id"]]
    assert run.status.value == "SUCCESS"
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home / "dagster")) as inst:
        checks = {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
                  for e in inst.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)}
        materialised = {e.dagster_event.asset_key.to_user_string()
                        for e in inst.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)}
    assert set(checks) == {"gate_quality_floor", "gate_beats_champion", "gate_calibration", "serving_infra_valid"}
    assert not checks["gate_quality_floor"] and not checks["gate_beats_champion"]
    assert "challenger" in materialised and not materialised & {"champion", "model_deployment"}
    # the copy took the write: the shared demo home still holds its two versions, and the third
    # version's artifacts are under the copy
    assert len(mlflow_client(demo[0]).search_model_versions("name='flight_delay'")) == 2
    client = mlflow_client(home)
    run = client.get_run(client.get_model_version("flight_delay", latest.version).run_id)
    assert run.info.artifact_uri.startswith((home / "mlflow").as_uri()), run.info.artifact_uri
