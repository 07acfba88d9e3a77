"""B5 (batch scoring through the registered champion vs the bare estimator) and B6 (online
scoring with ``mlops-serve``, or ``mlflow models serve`` with ``--server mlflow``, under a bounded
local load vs the model in-process; ``--sweep`` adds the throughput at which p99 crosses 50 ms).
Needs a registered ``champion`` in the MLflow store of $MLOPS_HOME (bench/run.py makes one)."""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _features(rows: int):
    import numpy as np

    from mlops_assets.lib.storage import Lake
    from mlops_assets.settings import get_settings

    lake = Lake(get_settings().lake_uri)
    df = lake.read_many("flight_features", lake.partitions("flight_features"))
    return df.iloc[np.random.default_rng(0).integers(0, len(df), rows)].reset_index(drop=True)


def b5(rows: int, repeats: int) -> dict:
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.features import feature_matrix
    from mlops_assets.settings import get_settings

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    version = registry.alias_version("champion").version
    model = registry.load_version(version)
    df = _features(rows)
    fitted = model.unwrap_python_model().pipeline
    # the bare fitted estimator (a scikit-learn Pipeline; a recalibrated model's base: its monotone
    # map is one vectorised expression on the probabilities, left out of this comparison)
    pipe = getattr(fitted, "base", fitted)
    X = feature_matrix(df)  # the already-prepared matrix it takes
    Z = pipe[:-1].transform(X)  # and what its last step sees, for the stricter comparison
    est = pipe[-1]

    fns = {"through": lambda: model.predict(df), "bare": lambda: pipe.predict_proba(X),
           "last_step": lambda: est.predict_proba(Z)}
    # One untimed call of each, then the three in turn: a single call over 1M rows takes 0.7 s on
    # a warm allocator and 2-3.5 s on a cold one, so the order of the calls would otherwise decide.
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i:
                times[k].append(time.perf_counter() - t0)
    through, bare, last_step = (statistics.median(times[k]) for k in fns)
    return {"rows": rows, "champion_version": str(version), "family": type(est).__name__,
            "through_registry_s": through, "bare_estimator_s": bare, "last_step_only_s": last_step}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(kind: str, version: str, workers: int, s):
    """(process, log, port): ``mlops-serve`` on a socket bound here (no port race); ``mlflow models
    serve`` (only with ``--server mlflow``, never in the tests) on a probed free port."""
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH (it is not when
    # the venv was never activated, as under `make test`).
    env = {**os.environ, "MLFLOW_TRACKING_URI": s.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    uri = f"models:/flight_delay/{version}"
    log = open(Path(s.home) / f"{kind}-serve.log", "w")
    if kind == "mlops":  # one process (the Deployment scales with replicas); payload log on, as deployed
        from mlops_assets.lib.infra_validation import listening_socket

        sock = listening_socket()
        port = sock.getsockname()[1]
        cmd = [str(Path(sys.executable).parent / "mlops-serve"), "--model-uri", uri, "--fd", str(sock.fileno())]
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    pass_fds=(sock.fileno(),))
        finally:
            sock.close()  # the server holds its own copy
        return proc, log, port
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log, port


def _one_round(port: int, bodies: list[str], concurrency: int):
    """``concurrency`` keep-alive connections send ``bodies``; returns latencies, wall time and the
    number of non-200 answers."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    it = iter(bodies)

    def worker():
        # http.client on a kept-alive connection: the load generator shares the 2 cores with the
        # server, and `requests` costs it about 1 ms of CPU per call on top.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                body = next(it, None)
            if body is None:
                conn.close()
                return
            t0 = time.perf_counter()
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if r.status != 200:
                    errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0, errors[0]


def _summary(lat, wall, errors) -> dict:
    q = statistics.quantiles(lat, n=100)
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "rps": len(lat) / wall, "errors": errors}


def b6(requests_n: int, concurrency: int, workers: int = 2, rounds: int = 3, server: str = "mlops",
       sweep: bool = False) -> dict:
    import requests

    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.settings import get_settings

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    version = registry.alias_version("champion").version
    model = registry.load_version(version)
    family = type(getattr(model.unwrap_python_model().pipeline, "base", model.unwrap_python_model().pipeline)[-1]).__name__
    df = _features(200)[FEATURE_COLUMNS]
    payloads = [df.iloc[[i % len(df)]] for i in range(requests_n)]
    bodies = [json.dumps({"dataframe_split": p.to_dict(orient="split")}, default=str) for p in payloads]

    # baseline: the model in-process on the same one-row payloads
    base = []
    for p in payloads[: min(500, requests_n)]:
        t0 = time.perf_counter()
        model.predict(p)
        base.append(time.perf_counter() - t0)

    proc, log, port = _start_server(server, str(version), workers, s)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{server} server did not come up:\n"
                                   + (Path(s.home) / f"{server}-serve.log").read_text()[-2000:])
            time.sleep(0.5)
        _one_round(port, bodies[:200], concurrency)  # warm-up
        # Each round opens new connections (with `mlflow models serve`, which of its workers accepts
        # each connection is chance and sets the tail): medians of the rounds.
        import psutil

        srv, me = psutil.Process(proc.pid), psutil.Process()

        def server_cpu() -> float:  # the server and its workers (`mlflow models serve` forks uvicorn's)
            return sum(sum(p.cpu_times()[:2]) for p in [srv, *srv.children(recursive=True)])

        cpu0 = (server_cpu(), sum(me.cpu_times()[:2]))
        batches0 = _batch_stats(url) if server == "mlops" else None
        results = [_one_round(port, bodies, concurrency) for _ in range(rounds)]
        n_req = sum(len(r[0]) for r in results)
        # where the time goes: CPU per request in the server and in the load generator (both on
        # the same 2 cores), and how many rows each model call scored (micro-batches)
        profile = {"server_cpu_ms_per_request": (server_cpu() - cpu0[0]) / n_req * 1000,
                   "client_cpu_ms_per_request": (sum(me.cpu_times()[:2]) - cpu0[1]) / n_req * 1000}
        if batches0 is not None:
            b1 = _batch_stats(url)
            calls, rows = b1[0] - batches0[0], b1[1] - batches0[1]
            profile.update({"model_calls": calls, "rows_per_model_call": rows / max(calls, 1)})
        # throughput vs tail: more connections until p99 passes 50 ms (one round each)
        curve = []
        if sweep:
            for c in (8, 16, 24, 32, 48, 64, 96, 128):
                r = _summary(*_one_round(port, bodies, c))
                curve.append({"concurrency": c, "rps": round(r["rps"]), "p50_ms": round(r["p50_ms"], 1),
                              "p99_ms": round(r["p99_ms"], 1), "errors": r["errors"]})
                if r["p99_ms"] > 50:
                    break
    finally:
        import contextlib

        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
    per_round = [_summary(*r) for r in results]
    bq = statistics.quantiles(base, n=100)
    med = {k: statistics.median(r[k] for r in per_round) for k in ("p50_ms", "p99_ms", "rps")}
    return {"server": server, "family": family, "requests": len(results[0][0]), "rounds": rounds,
            "errors": sum(r["errors"] for r in per_round), "concurrency": concurrency, **med,
            "p99_ms_per_round": [round(r["p99_ms"], 1) for r in per_round],
            "inprocess_p50_ms": bq[49] * 1000, "inprocess_p99_ms": bq[98] * 1000, "workers": workers,
            "curve": curve, "profile": profile}


def _batch_stats(url: str) -> tuple[float, float]:
    """(model calls, rows) so far, from the server's /metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=5).text):
        for smp in fam.samples:
            out[smp.name] = smp.value
    return out.get("mlops_serving_batch_rows_count", 0.0), out.get("mlops_serving_batch_rows_sum", 0.0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["b5", "b6"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server", choices=["mlops", "mlflow"], default="mlops")
    ap.add_argument("--sweep", action="store_true", help="B6: also the throughput at which p99 passes 50 ms")
    a = ap.parse_args()
    res = b5(a.rows, a.repeats) if a.which == "b5" else b6(a.requests, a.concurrency, a.workers, a.rounds,
                                                            a.server, a.sweep)
    print("RESULT " + json.dumps(res))
