"""The production topology for real: the instance in PostgreSQL with the queued run coordinator,
compute logs in S3, lake and landing zone in an S3-compatible store (SeaweedFS), an MLflow server on
PostgreSQL with its artifacts in that store; the code location served by `dagster api grpc`, the
daemon and the webserver beside it.  The demo's cycle (ingest, train, gate, promote, deploy, score,
monitor) runs on it and gives the numbers the embedded default gives; then the daemon's sensors take new days landed in the store through
the same cycle."""

import json
import time

import pytest

from tests.conftest import run_demo
from tests.topology.conftest import platform_env
from tests.topology.services import DagsterProcesses

NEW_FIRST, NEW_LAST = "2013-01-31", "2013-02-02"


@pytest.fixture(scope="module")
def prod_demo(services, tmp_path_factory):
    home = tmp_path_factory.mktemp("prod")
    env = platform_env(services, home)
    t0 = time.perf_counter()
    stdout = run_demo(env, home / "demo.json")
    print(f"demo on the production topology: {time.perf_counter() - t0:.0f}s")
    return home, env, stdout


@pytest.fixture
def in_services(services, prod_demo, monkeypatch):
    """This test process pointed at the services too (to read what the platform wrote)."""
    home, env, _ = prod_demo
    for k, v in env.items():
        if k.startswith(("AWS_", "MLOPS_", "DAGSTER_", "MLFLOW_")):
            monkeypatch.setenv(k, v)
    from mlops_assets.settings import get_settings

    get_settings.cache_clear()
    yield home, env
    get_settings.cache_clear()


def test_the_demo_on_the_services_gives_the_local_numbers(prod_demo, local_demo):
    prod = json.loads((prod_demo[0] / "demo.json").read_text())
    local = json.loads((local_demo[0] / "demo.json").read_text())
    assert [v["version"] for v in prod["versions"]] == [v["version"] for v in local["versions"]] == ["1", "2"]
    for p, q in zip(prod["versions"], local["versions"]):
        for k in ("week", "family", "params", "gate", "champion_version_compared", "recalibrated", "data_window"):
            assert p[k] == q[k], (k, p, q)
        for k in ("holdout_roc_auc", "holdout_log_loss"):
            assert float(p[k]) == pytest.approx(float(q[k]), abs=1e-6), (k, p, q)
    assert prod["champion"] == local["champion"]
    assert len(prod["live"]) == len(local["live"]) >= 2
    for p, q in zip(prod["live"], local["live"]):
        assert (p["date"], p["model_version"]) == (q["date"], q["model_version"])
        assert p["roc_auc"] == pytest.approx(q["roc_auc"], abs=1e-9) and p["n"] == q["n"]


def test_the_state_lives_in_the_services(services, prod_demo, in_services):
    from mlflow import MlflowClient

    home, env = in_services
    # partitions are objects in the store, and nothing went to local disk instead
    lake = set(services.store.keys("lake", "lake/"))
    for asset in ("raw_flights", "flight_features", "training_examples"):
        assert {f"lake/{asset}/2013-01-{d:02d}.parquet" for d in range(1, 30)} <= lake, asset
    assert {"lake/flight_delay_predictions/2013-01-28.parquet", "lake/prediction_performance/2013-01-29.parquet",
            "lake/training_set/2013-01-21.parquet"} <= lake
    assert not (home / "lake").exists() and not (home / "landing").exists() and not (home / "mlflow").exists()
    assert services.store.keys("landing", "landing/schedules/")
    # the model versions in the server, their artifacts in the store
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions("name='flight_delay'")
    assert sorted(v.version for v in versions) == ["1", "2"] and all(v.status == "READY" for v in versions)
    artifacts = services.store.keys("mlflow", "artifacts/")
    for v in versions:
        model_id = v.source.rsplit("/", 1)[-1]  # models:/m-<id>: MLflow 3's logged model
        assert any(model_id in k and k.endswith("/MLmodel") for k in artifacts), (v.version, v.source)
        assert any(v.run_id in k and k.endswith("drift_reference.json") for k in artifacts), v.version
    # the runs in PostgreSQL, every one of the demo's succeeded
    runs = services.pg.query("dagster", "SELECT run_id, status FROM runs")
    assert len(runs) >= 5 and {s for _, s in runs} == {"SUCCESS"}, runs
    # the steps' compute logs in S3
    logs = services.store.keys("dagster", "compute-logs/")
    for run_id, _ in runs:
        assert any(run_id in k for k in logs), f"no compute logs of run {run_id} in s3://dagster/compute-logs"


def test_the_daemon_and_code_server_run_the_sensors_on_the_services(services, prod_demo, in_services):
    import dagster as dg

    from mlops_assets.lib.source import replay
    from mlops_assets.year import _quiet

    home, env = in_services
    env = {**env, "MLOPS_SENSOR_INTERVAL_S": "1"}
    procs = DagsterProcesses(home, env)
    try:
        procs.start()
        for name in ("landing_zone_sensor", "model_health_sensor"):  # one sensor per call
            out = procs.cli("sensor", "start", "-w", str(procs.workspace), name)
            assert out.returncode == 0, out.stdout + out.stderr
        # the source system lands three more days (and the outcomes of the days before)
        replay(env["MLOPS_LANDING_URI"], NEW_LAST, NEW_FIRST, outcomes_from="2013-01-01")
        t0 = time.time()  # quiet means: a tick after this (which sees every file) asked for nothing
        with dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
            deadline, why = time.time() + 420, ""
            while time.time() < deadline:
                ok, why = _quiet(inst, t0)
                if ok:
                    break
                time.sleep(1)
            assert ok, f"the platform did not settle: {why}"
            sensor_runs = [r.dagster_run for r in inst.get_run_records(dg.RunsFilter(
                tags={"dagster/sensor_name": "landing_zone_sensor"}))]
        assert sensor_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in sensor_runs), \
            [(r.run_id, r.status) for r in sensor_runs]
        # the new days went through ingestion, features and scoring by the deployed champion, in the store
        lake = set(services.store.keys("lake", "lake/"))
        for day in ("2013-01-31", "2013-02-01", "2013-02-02"):
            for asset in ("raw_flights", "flight_features", "flight_delay_predictions", "feature_drift"):
                assert f"lake/{asset}/{day}.parquet" in lake, (asset, day)
        assert "lake/prediction_performance/2013-01-31.parquet" in lake  # its outcomes landed with 02-01
        # those runs are in PostgreSQL (queued, then launched by the daemon) with compute logs in S3
        statuses = dict(services.pg.query("dagster", "SELECT run_id, status FROM runs"))
        logs = services.store.keys("dagster", "compute-logs/")
        for r in sensor_runs:
            assert statuses[r.run_id] == "SUCCESS"
            assert any(r.run_id in k for k in logs), r.run_id
        # and the webserver, on the same instance and code server, shows them
        data = procs.graphql("{ runsOrError(filter: {tags: [{key: \"dagster/sensor_name\", value: "
                             "\"landing_zone_sensor\"}]}) { ... on Runs { results { runId status } } } }")
        shown = {r["runId"]: r["status"] for r in data["runsOrError"]["results"]}
        assert shown == {r.run_id: "SUCCESS" for r in sensor_runs}
    finally:
        procs.stop()
