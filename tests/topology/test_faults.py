"""Faults on the real services: PostgreSQL restarted under a running run, the object store killed in
the middle of a partition write, the MLflow server killed while a model is being registered."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest


BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def test_object_store_killed_during_a_partition_write(services, pointed):
    """No partial partition is ever visible: the previous version stays whole; the error names
    the store and the key; once the store is back, the retry writes the new version."""
    from mlops_assets.lib.storage import Lake, StoreError

    pointed(MLOPS_LAKE_URI="s3://lake/store-fault")
    lake = Lake(os.environ["MLOPS_LAKE_URI"])
    old = pd.DataFrame({"x": np.arange(10.0)})
    lake.write("raw_flights", "2013-01-05", old)
    # ~120 MB of Parquet: a multipart upload the kill interrupts after its first part
    big = pd.DataFrame({"x": np.random.default_rng(0).random(15_000_000)})
    failure: dict = {}

    def write():
        try:
            lake.write("raw_flights", "2013-01-05", big)
        except Exception as exc:  # noqa: BLE001 - what the test inspects
            failure["error"] = exc

    t = threading.Thread(target=write)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), "the write finished before the store could be stopped; make it bigger"
    services.store.kill()
    t.join(timeout=300)
    try:
        err = failure.get("error")
        assert isinstance(err, StoreError), failure
        msg = str(err)
        assert "raw_flights/2013-01-05.parquet" in msg and services.store.endpoint in msg and "lake bucket" in msg
    finally:
        services.store.start()
    pd.testing.assert_frame_equal(lake.read("raw_flights", "2013-01-05"), old)  # whole, and the old one
    lake.write("raw_flights", "2013-01-05", big)
    assert len(lake.read("raw_flights", "2013-01-05", columns=["x"])) == len(big)


def _materialize_cmd(first: str, last: str) -> list[str]:
    return [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets.definitions",
            "--select", "group:ingestion or group:features", "--partition-range", f"{first}...{last}"]


def test_postgres_restarted_while_a_run_is_going(services, pointed):
    """The run's instance (events, run status) is in PostgreSQL, restarted under it: the run either
    finishes or fails with a clear database error (never stays STARTED), and a re-run completes."""
    from mlops_assets.lib.source import replay
    from mlops_assets.lib.storage import Lake

    services.pg.create_database("dagster_pgfault")
    home, env = pointed(MLOPS_LAKE_URI="s3://lake/pg-fault", MLOPS_LANDING_URI="s3://landing/pg-fault",
                        DAGSTER_PG_URL=services.pg.url("dagster_pgfault"))
    first, last = "2013-01-01", "2013-01-10"
    replay(env["MLOPS_LANDING_URI"], "2013-01-11", first)  # the outcomes of a day land with the next
    proc = subprocess.Popen(_materialize_cmd(first, last), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not services.pg.query(
            "dagster_pgfault", "SELECT 1 FROM information_schema.tables WHERE table_name = 'runs'"):
        time.sleep(0.5)
    while time.time() < deadline and not services.pg.query("dagster_pgfault",
                                                           "SELECT run_id FROM runs WHERE status = 'STARTED'"):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.3)
    time.sleep(2)  # into its steps
    assert proc.poll() is None, "the run ended before PostgreSQL could be restarted"
    t0 = time.time()
    services.pg.restart()
    restart_s = time.time() - t0
    out, _ = proc.communicate(timeout=600)
    (run_id, status), = services.pg.query("dagster_pgfault", "SELECT run_id, status FROM runs")
    print(f"PostgreSQL restarted in {restart_s:.1f}s; the run: rc={proc.returncode}, status {status}")
    if proc.returncode == 0:
        assert status == "SUCCESS"
    else:  # failed, clearly: the database error is named, and the run is not left STARTED
        assert status == "FAILURE", (status, out[-3000:])
        assert any(s in out for s in ("OperationalError", "terminating connection", "server closed the connection",
                                      "connection refused", "Connection refused")), out[-3000:]
    rerun = subprocess.run(_materialize_cmd(first, last), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    rows = services.pg.query("dagster_pgfault", "SELECT status FROM runs ORDER BY create_timestamp DESC LIMIT 1")
    assert rows == [("SUCCESS",)]
    lake = Lake(env["MLOPS_LAKE_URI"])
    assert lake.partitions("flight_features") == [f"2013-01-{d:02d}" for d in range(1, 11)]


def test_mlflow_server_killed_during_registration(services, pointed):
    """The server dies while the week's challenger is being logged and registered: the run fails
    with one clear error, no version is left half-registered (every version there is READY and
    carries its whole record) and champion does not move; once the server is back, a re-run
    registers and promotes exactly one version."""
    from mlflow import MlflowClient

    from mlops_assets.defs.deployment import assets as deployment
    from mlops_assets.defs.evaluation import assets as evaluation
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.defs.training import assets as training
    from mlops_assets.settings import get_settings
    from tests.reliability.helpers import ingest

    server = services.extra_mlflow("mlflow_fault")
    try:
        pointed(MLOPS_LAKE_URI="s3://lake/mlflow-fault", MLOPS_LANDING_URI="s3://landing/mlflow-fault",
                MLFLOW_TRACKING_URI=server.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                MLFLOW_HTTP_REQUEST_TIMEOUT="5", MLOPS_INFRA_VALIDATION="off")
        ingest("2013-01-01", "2013-01-20")
        cycle = [training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion]
        seen = {}

        def kill_when_the_model_uploads():  # log_model's first object in the store: registration under way
            deadline = time.time() + 600
            while time.time() < deadline and "killed" not in seen:
                if any(k.endswith("MLmodel") for k in services.store.keys(server.bucket, "")):
                    server.kill()
                    seen["killed"] = time.time()
                time.sleep(0.1)

        watcher = threading.Thread(target=kill_when_the_model_uploads, daemon=True)
        watcher.start()
        r = dg.materialize(cycle, resources=build_resources(get_settings()), partition_key="2013-01-14",
                           raise_on_error=False)
        watcher.join(timeout=5)
        assert "killed" in seen, "the model never reached the store"
        assert not r.success
        failed = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
        assert [e.step_key for e in failed] == ["challenger"], [e.step_key for e in failed]
        err = failed[0].event_specific_data.error
        msg = err.message + (err.cause.message if err.cause else "")
        assert f"MLflow tracking server {server.url} is unreachable" in msg, msg
        server.start()
        client = MlflowClient(server.url)
        versions = client.search_model_versions("name='flight_delay'")
        for v in versions:  # none, or whole
            assert v.status == "READY" and {"gate", "holdout_roc_auc", "data_window", "dagster_run_id"} <= set(v.tags), v
        with pytest.raises(Exception):
            client.get_model_version_by_alias("flight_delay", "champion")
        r2 = dg.materialize(cycle, resources=build_resources(get_settings()), partition_key="2013-01-14")
        assert r2.success
        after = client.search_model_versions("name='flight_delay'")
        new = [v for v in after if v.version not in {x.version for x in versions}]
        assert len(new) == 1 and new[0].tags["dagster_run_id"] == r2.run_id
        assert client.get_model_version_by_alias("flight_delay", "champion").version == new[0].version
    finally:
        server.stop()
