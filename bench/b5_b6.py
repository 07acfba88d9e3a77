"""B5 (batch scoring through the registered champion vs the bare estimator) and B6 (online
scoring with ``mlflow models serve`` under a bounded local load vs the model in-process).
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


def b6(requests_n: int, concurrency: int, workers: int = 2, rounds: int = 3) -> dict:
    import requests

    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.settings import get_settings

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    version = registry.alias_version("champion").version
    model = registry.load_version(version)
    df = _features(200)[FEATURE_COLUMNS]
    payloads = [df.iloc[[i % len(df)]] for i in range(requests_n)]
    bodies = [json.dumps({"dataframe_split": p.to_dict(orient="split")}, default=str) for p in payloads]

    # baseline: the model in-process on the same one-row payloads
    base = []
    for p in payloads[: min(500, requests_n)]:
        t0 = time.perf_counter()
        model.predict(p)
        base.append(time.perf_counter() - t0)

    port = _free_port()
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH (it is not when
    # the venv was never activated, as under `make test`).
    env = {**os.environ, "MLFLOW_TRACKING_URI": s.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(Path(s.home) / "mlflow-serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/flight_delay/{version}",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("mlflow models serve did not come up:\n"
                                   + (Path(s.home) / "mlflow-serve.log").read_text()[-2000:])
            time.sleep(0.5)

        def one_round(bodies):
            """``concurrency`` keep-alive connections send ``bodies``; returns latencies, wall
            time and the number of non-200 answers."""
            lat: list[float] = []
            errors = [0]
            lock = threading.Lock()
            it = iter(bodies)

            def worker():
                # http.client on a kept-alive connection: the load generator shares the 2 cores
                # with the server, and `requests` costs it about 1 ms of CPU per call on top.
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

        one_round(bodies[:200])  # warm-up: the first request of each worker freezes its heap
        # Each round opens new connections. Which uvicorn worker accepts each of the 8 kept-alive
        # connections is chance (4+4, 5+3, 6+2...), and the worker holding more of them sets the
        # tail: one round's p99 measures that draw as much as the server. Medians of the rounds.
        results = [one_round(bodies) for _ in range(rounds)]
    finally:
        import contextlib

        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    per_round = []
    for lat, wall, errors in results:
        q = statistics.quantiles(lat, n=100)
        per_round.append({"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "rps": len(lat) / wall, "errors": errors})
    bq = statistics.quantiles(base, n=100)
    med = {k: statistics.median(r[k] for r in per_round) for k in ("p50_ms", "p99_ms", "rps")}
    return {"requests": len(results[0][0]), "rounds": rounds, "errors": sum(r["errors"] for r in per_round),
            "concurrency": concurrency, **med, "p99_ms_per_round": [round(r["p99_ms"], 1) for r in per_round],
            "inprocess_p50_ms": bq[49] * 1000, "inprocess_p99_ms": bq[98] * 1000, "workers": workers}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["b5", "b6"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res = b5(a.rows, a.repeats) if a.which == "b5" else b6(a.requests, a.concurrency, a.workers, a.rounds)
    print("RESULT " + json.dumps(res))
