"""Real services for end-to-end tests: `dagster dev` (webserver + daemon) on a free local port, a
GraphQL helper, and an HTTP receiver for alerts.  Everything started here is stopped here."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from tests.helpers import free_port  # noqa: F401 (re-exported for the tests that import it from here)
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "mlops_assets"
REPOSITORY = "__repository__"




def service_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PYTHONWARNINGS": "ignore"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class DagsterDev:
    def __init__(self, home: Path, env: dict, port: int):
        self.home, self.env, self.port = home, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / "dagster-dev.log"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        r = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body
        return body["data"]

    def start_sensor(self, name: str) -> str:
        data = self.graphql(
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                 __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}},
        )["startSensor"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]["status"]


@contextlib.contextmanager
def dagster_dev(home: Path, timeout: float = 120, **extra_env):
    from mlops_assets.settings import DAGSTER_YAML

    (home / "dagster").mkdir(parents=True, exist_ok=True)
    if not (home / "dagster" / "dagster.yaml").exists():
        (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    port = free_port()
    env = service_env(home, **extra_env)
    dev = DagsterDev(home, env, port)
    fh = open(dev.log, "w")
    proc = subprocess.Popen([str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                             "-p", str(port)], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {dev.log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{dev.url}/server_info", timeout=2).ok:
                    # the code location is loaded once the repository answers
                    data = dev.graphql("{ workspaceOrError { __typename ... on Workspace { locationEntries { name "
                                       "locationOrLoadError { __typename } } } } }")
                    entries = data["workspaceOrError"]["locationEntries"]
                    if entries and entries[0]["locationOrLoadError"] and \
                            entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                        break
            if time.time() > deadline:
                raise TimeoutError(f"dagster dev not ready in {timeout}s: {dev.log.read_text()[-3000:]}")
            time.sleep(1)
        yield dev
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # children that outlived their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        fh.close()


class Receiver:
    """An HTTP server on localhost that records JSON POSTs."""

    def __init__(self):
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append({"path": self.path, "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        # bound here, to a port the kernel picks: nothing else can take it between choice and bind
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def instance(home: Path):
    from dagster import DagsterInstance

    return DagsterInstance.from_config(str(home / "dagster"))


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
