"""The MLflow tracking server (a real `mlflow server` on localhost) is stopped while the week's
models train: the trial steps retry with backoff (their RetryPolicy), then fail with one clear
error; no model version is registered, half or whole; once the server is back, a re-run succeeds
and registers exactly one version."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.settings import get_settings
from tests.reliability.helpers import free_port, module_home

BIN = Path(sys.executable).parent
WEEK = "2013-01-14"
CYCLE = [training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion]


class Server:
    """`mlflow server` with its own SQLite store, stopped and started again on the same port."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.proc = root, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               # MLflow 3's job runner (a huey consumer and its workers, for GenAI jobs): unused, and
               # ~30 s of CPU per start (tests/topology/services.py turns it off too)
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            time.sleep(0.3)
        raise AssertionError("mlflow server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    port = free_port()
    # MLflow's own HTTP retries off: the steps' RetryPolicy is what this test watches.
    with module_home(tmp_path_factory, "outage", days=("2013-01-01", "2013-01-20"),
                     MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
                     MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5") as h:
        server = Server(h / "mlflow-server", port)
        server.start()
        try:
            yield h, server
        finally:
            server.stop()


def _trial_runs(url):
    r = requests.get(f"{url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "flight_delay"},
                     timeout=2)
    if not r.ok:
        return []
    exp = r.json()["experiment"]["experiment_id"]
    r = requests.post(f"{url}/api/2.0/mlflow/runs/search", timeout=2,
                      json={"experiment_ids": [exp], "filter": "tags.mlops_role = 'trial'", "max_results": 50})
    return r.json().get("runs", []) if r.ok else []


def _chain(err) -> str:
    out = []
    while err is not None:
        out.append(err.message)
        err = err.cause or err.context
    return "\n".join(out)


def test_tracking_server_down_mid_training_then_back(world):
    from mlflow import MlflowClient

    from mlops_assets.lib import tracking

    home, server = world
    s = get_settings()
    assert s.tracking_uri == server.url and s.remote_tracking
    killed = threading.Event()

    def stop_when_training():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if _trial_runs(server.url):
                    server.stop()
                    killed.set()
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_when_training, daemon=True)
    watcher.start()
    r = dg.materialize(CYCLE, resources=build_resources(s), partition_key=WEEK, raise_on_error=False)
    watcher.join(timeout=5)
    assert killed.is_set(), "the server was never stopped mid-training"
    assert not r.success
    failures = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and all(e.step_key.startswith("candidate_models__") and "_trial[" in e.step_key for e in failures)
    for f in failures:
        msg = _chain(f.event_specific_data.error)  # "Exceeded max_retries of 2", caused by ...
        assert "Exceeded max_retries of 2" in msg
        assert f"MLflow tracking server {server.url} is unreachable" in msg, msg
        retries = [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == f.step_key]
        assert len(retries) == 2  # RetryPolicy(max_retries=2, exponential backoff), then the failure
    started = {e.step_key for e in r.all_events if e.event_type_value == "STEP_START"}
    assert "challenger" not in started and "champion" not in started

    server.start()  # back, same store
    client = MlflowClient(server.url)
    assert client.search_model_versions("name='flight_delay'") == []  # nothing registered, half or whole
    r2 = dg.materialize(CYCLE, resources=build_resources(s), partition_key=WEEK)
    assert r2.success
    versions = client.search_model_versions("name='flight_delay'")
    assert len(versions) == 1 and versions[0].status == "READY"
    v = versions[0]
    assert v.tags["dagster_run_id"] == r2.run_id
    tracking.configure(server.url)
    assert str(client.get_model_version_by_alias("flight_delay", "champion").version) == str(v.version)
