"""Infra validation before the alias moves (TFX's InfraValidator, for MLflow models; no Dagster here).

The candidate version is started in the real serving process, ``mlops-serve`` (the command
the serving Deployment runs), and sent rows whose batch predictions are known: it passes when the
process comes up, every served answer matches the batch prediction of the same row to
``tolerance``, and the p99 latency of one-row requests stays within ``p99_budget_ms`` (twice
in a row if the first measurement is over).  A model
that cannot be served, or that serves other answers than the batch path computed, is never
promoted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class InfraValidation:
    passed: bool
    reason: str
    model_uri: str
    startup_s: float = float("nan")
    rows: int = 0
    max_abs_diff: float = float("nan")
    p99_ms: float = float("nan")
    p99_budget_ms: float = float("nan")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a port the kernel picks, listening and inheritable: a server process
    started with ``mlops-serve --fd <fileno>`` (and ``pass_fds``) serves on it. Choosing a free
    port by probing and handing the number over races with every other process doing the same
    (parallel validations, parallel test workers); a socket bound here cannot be taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def request_body(df: pd.DataFrame) -> str:
    """``df`` as MLflow's ``dataframe_split`` JSON, every float at full (round-trip) precision and
    missing values as null.  (``DataFrame.to_json`` keeps 10 significant digits: 7.916666666666667
    became 7.9166666667, which lands on the other side of a tree's split threshold; found by this
    very validation, which then failed 5 of 16 sound versions by up to 0.05.)"""
    split = df.to_dict(orient="split")
    data = [[None if isinstance(v, float) and v != v else v for v in row] for row in split["data"]]
    return json.dumps({"dataframe_split": {"columns": list(split["columns"]), "data": data}},
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _post(url: str, df: pd.DataFrame, timeout: float) -> tuple[int, str]:
    import requests

    r = requests.post(url, data=request_body(df), headers={"Content-Type": "application/json"}, timeout=timeout)
    return r.status_code, r.text


class ServingProcess:
    """One ``mlops-serve`` process on a socket bound here (no port race), stopped by ``close``.

    Given ``model_uri`` it starts serving that version at once.  Without one it starts *ahead*:
    the process imports what loading and serving a version needs (MLflow, scikit-learn, uvicorn:
    ~2-3 s on 2 cores) while the caller is still evaluating and registering the version, and
    loads the version ``serve`` names (sent on its stdin).  The version served is still the
    registered artifact, loaded by the serving command itself; only the imports moved earlier."""

    def __init__(self, model_uri: str | None = None, *, tracking_uri: str | None = None):
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        sock = listening_socket()
        self.url = "http://127.0.0.1:%d" % sock.getsockname()[1]
        self.model_uri = model_uri
        self.log = tempfile.TemporaryFile(mode="w+")
        # the serving Deployment's own command (mlops-serve), with nothing recorded
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlops_assets.serve", "--model-uri", model_uri or "-", "--fd", str(sock.fileno()),
                 "--no-payload-log"], pass_fds=(sock.fileno(),), env=env, stdout=self.log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL if model_uri else subprocess.PIPE, start_new_session=True)
        finally:
            sock.close()  # the server holds its own copy
        self._t0 = time.perf_counter()

    def serve(self, model_uri: str) -> None:
        """Load and serve ``model_uri`` (a process started without one); startup is timed from here."""
        if self.model_uri is not None:
            raise RuntimeError(f"this serving process already serves {self.model_uri}")
        self.model_uri = model_uri
        self._t0 = time.perf_counter()
        try:
            self.proc.stdin.write(f"{model_uri}\n".encode())
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it exited: validate() reports why, from its log

    def tail(self) -> str:
        """The server's own error lines (its worker's, then the launcher's), else its last output."""
        import re

        self.log.seek(0)
        text = self.log.read()
        errors = [ln.strip() for ln in text.splitlines() if re.match(r"^\s*[\w.]*(Error|Exception)\b.*:", ln)]
        unique = list(dict.fromkeys(errors))[-3:]
        return " | ".join(unique)[-1500:] if unique else text[-1500:].strip()

    def validate(self, rows: pd.DataFrame, expected, *, tolerance: float = 1e-6, p99_budget_ms: float = 250.0,
                 latency_requests: int = 100, startup_timeout_s: float = 180.0,
                 request_timeout_s: float = 30.0) -> InfraValidation:
        """Wait for /ping, score ``rows`` (feature columns only, as a client sends them) in one
        request and compare with ``expected`` (the batch predictions of the same rows), then time
        ``latency_requests`` one-row requests."""
        import requests

        if self.model_uri is None:
            raise RuntimeError("serve(model_uri) first")
        expected = np.asarray(expected, dtype=float)
        url, model_uri = self.url, self.model_uri

        def fail(reason: str, **kw) -> InfraValidation:
            return InfraValidation(False, reason, model_uri, p99_budget_ms=p99_budget_ms, **kw)

        while True:
            if self.proc.poll() is not None:
                return fail(f"the serving process exited with code {self.proc.returncode} before answering: {self.tail()}")
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.perf_counter() - self._t0 > startup_timeout_s:
                return fail(f"the serving process did not answer /ping within {startup_timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.05)
        startup = time.perf_counter() - self._t0
        status, text = _post(f"{url}/invocations", rows, request_timeout_s)
        if status != 200:
            return fail(f"scoring {len(rows)} rows answered HTTP {status}: {text[:500]}", startup_s=startup)
        preds = json.loads(text)["predictions"]
        served = np.asarray([p["delay_probability"] if isinstance(p, dict) else p for p in preds], dtype=float)
        if served.shape != expected.shape:
            return fail(f"served {served.shape[0]} answers for {expected.shape[0]} rows", startup_s=startup)
        diff = float(np.max(np.abs(served - expected))) if len(served) else 0.0
        if not diff <= tolerance:
            worst = int(np.argmax(np.abs(served - expected)))
            return fail(f"served answers differ from the batch predictions by up to {diff:.3g} (row {worst}: served "
                        f"{served[worst]:.6f}, batch {expected[worst]:.6f}; tolerance {tolerance:g})",
                        startup_s=startup, rows=len(rows), max_abs_diff=diff)
        p99 = float("nan")
        # A latency breach must reproduce: the validating machine may be busy for a moment (the
        # year's first runs, 3 instances on 2 cores, saw one-off p99s of 120-1070 ms for versions
        # that answer in 8-18 ms), so a p99 over budget is measured once more before it fails.
        for _attempt in range(2):
            lat = []
            for i in range(latency_requests):
                one = rows.iloc[[i % len(rows)]]
                t = time.perf_counter()
                status, text = _post(f"{url}/invocations", one, request_timeout_s)
                lat.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    return fail(f"a one-row request answered HTTP {status}: {text[:300]}", startup_s=startup,
                                rows=len(rows), max_abs_diff=diff)
            p99 = float(np.percentile(lat, 99))
            if p99 <= p99_budget_ms:
                break
        if p99 > p99_budget_ms:
            return fail(f"p99 latency {p99:.1f} ms over the budget of {p99_budget_ms:.0f} ms ({latency_requests} one-row "
                        "requests)", startup_s=startup, rows=len(rows), max_abs_diff=diff, p99_ms=p99)
        return InfraValidation(True, f"served {len(rows)} rows identical to batch (max diff {diff:.2g}), p99 {p99:.1f} ms "
                                     f"<= {p99_budget_ms:.0f} ms, up in {startup:.1f} s", model_uri, startup, len(rows),
                               diff, p99, p99_budget_ms)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # a process still waiting for its version exits on EOF
            except OSError:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> "ServingProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def validate_serving(model_uri: str, rows: pd.DataFrame, expected, *, tracking_uri: str | None = None,
                     tolerance: float = 1e-6, p99_budget_ms: float = 250.0, latency_requests: int = 100,
                     startup_timeout_s: float = 180.0, request_timeout_s: float = 30.0,
                     server: ServingProcess | None = None) -> InfraValidation:
    """Serve ``model_uri`` with ``mlops-serve`` (what the serving Deployment runs) on a socket bound
    here (``ServingProcess``), score ``rows`` (feature columns only, as a client sends them) in one request and compare
    with ``expected`` (the batch predictions of the same rows), then time ``latency_requests``
    one-row requests.  ``server``: a ``ServingProcess`` started ahead (without a version) to use.
    The server is stopped before returning, whatever happened."""
    sp = server if server is not None else ServingProcess(model_uri, tracking_uri=tracking_uri)
    with sp:
        if server is not None:
            sp.serve(model_uri)
        return sp.validate(rows, expected, tolerance=tolerance, p99_budget_ms=p99_budget_ms,
                           latency_requests=latency_requests, startup_timeout_s=startup_timeout_s,
                           request_timeout_s=request_timeout_s)


def validate_version(version: str, features: pd.DataFrame, *, rows: int = 200, tracking_uri: str | None = None,
                     p99_budget_ms: float = 250.0, server: ServingProcess | None = None) -> InfraValidation:
    """Infra validation of a registered ``version``: ``rows`` rows drawn from ``features`` (seeded),
    their batch predictions from the registered artifact loaded as the batch path loads it, and
    the same rows served by ``mlops-serve`` (``validate_serving``)."""
    from mlops_assets.lib import registry

    sample = features.sample(n=min(rows, len(features)), random_state=0).reset_index(drop=True)
    expected = registry.load_version(version).predict(sample)["delay_probability"].to_numpy()
    return validate_serving(registry.version_uri(version), sample, expected, tracking_uri=tracking_uri,
                            p99_budget_ms=p99_budget_ms, server=server)
