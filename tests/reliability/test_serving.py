"""1,000 malformed requests against `mlflow models serve` of the champion: every one answered 4xx
naming what is wrong, the server healthy afterwards and its memory flat."""

import http.client
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from mlops_assets.lib.features import FEATURE_COLUMNS
from tests.reliability.helpers import (
    free_port,
    module_home,
    register_model,
    running_server,
)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with module_home(tmp_path_factory, "serving", days=("2013-01-01", "2013-01-09")) as h:
        version = register_model([f"2013-01-0{d}" for d in range(1, 10)], alias="champion")
        from mlops_assets.lib.storage import Lake
        from mlops_assets.settings import get_settings

        s = get_settings()
        rows = Lake(s.lake_uri).read("flight_features", "2013-01-09")[FEATURE_COLUMNS]
        port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": s.tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/flight_delay@champion", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
        with running_server(cmd, port, env, h / "serve.log") as proc:
            yield port, proc, rows, version


def _request(port, method, path, body=b"", ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if body else {})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def _split(df: pd.DataFrame) -> dict:
    return json.loads(df.to_json(orient="split", index=False))


def _payload(df: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": _split(df)}).encode()


def _rss(proc) -> float:
    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


NUMERIC = [c for c in FEATURE_COLUMNS if c not in ("carrier", "origin", "dest")]
REQUIRED = ["sched_dep_hour", "distance", "month", "day_of_week", "origin_hour_departures"]
WEATHER = ["temp", "humid", "wind_speed", "pressure", "visib"]


def malformed(i: int, rows: pd.DataFrame, rng) -> tuple[str, bytes, str]:
    """The i-th malformed request: (kind, body, content type)."""
    one = rows.sample(n=int(rng.integers(1, 4)), random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    kinds = ["string_in_numeric", "number_in_code", "bool_in_numeric", "missing_field", "extra_field",
             "nan_in_required", "null_code", "infinity", "out_of_range", "unknown_code", "not_json",
             "truncated_json", "wrong_content_type", "empty_body", "no_rows", "unknown_format", "huge"]
    kind = kinds[i % len(kinds)]
    body = None
    if kind == "string_in_numeric":
        one[str(rng.choice(NUMERIC))] = one[NUMERIC[0]].astype(object)
        one.loc[0, str(rng.choice(NUMERIC))] = "abc"
        one[NUMERIC[0]] = "abc"
    elif kind == "number_in_code":
        one[str(rng.choice(["carrier", "origin", "dest"]))] = 42
    elif kind == "bool_in_numeric":
        one[str(rng.choice(NUMERIC))] = True
    elif kind == "missing_field":
        one = one.drop(columns=[str(rng.choice(FEATURE_COLUMNS))])
    elif kind == "extra_field":
        one["gate_number"] = "B12"
    elif kind == "nan_in_required":
        split = _split(one)
        split["data"][0][split["columns"].index(str(rng.choice(REQUIRED)))] = float("nan")
        body = json.dumps({"dataframe_split": split}).encode()  # a NaN token, as some clients send
    elif kind == "null_code":
        one[str(rng.choice(["carrier", "origin", "dest"]))] = None
    elif kind == "infinity":
        split = _split(one)
        split["data"][0][split["columns"].index(str(rng.choice(WEATHER)))] = float("inf")
        body = json.dumps({"dataframe_split": split}).encode()
    elif kind == "out_of_range":
        col, val = [("month", 13), ("distance", -5), ("sched_dep_hour", 99), ("humid", 250)][i % 4]
        one[col] = val
    elif kind == "unknown_code":
        one["origin"] = "XXX"
    elif kind == "not_json":
        body = b"carrier,origin\nUA,EWR\n{"
    elif kind == "truncated_json":
        body = _payload(one)[:-7]
    elif kind == "wrong_content_type":
        return kind, _payload(one), "text/plain"
    elif kind == "empty_body":
        body = b"{}"
    elif kind == "no_rows":
        body = json.dumps({"dataframe_split": {"columns": FEATURE_COLUMNS, "data": []}}).encode()
    elif kind == "unknown_format":
        body = json.dumps({"rows": _split(one)["data"]}).encode()
    elif kind == "huge":  # over the 10,000-row limit: ~4 MB
        big = rows.sample(n=12_000, replace=True, random_state=i).reset_index(drop=True)
        body = _payload(big)
    return kind, body if body is not None else _payload(one), "application/json"


def test_a_thousand_malformed_requests_are_refused_and_the_server_stays_well(server):
    port, proc, rows, version = server
    good = _payload(rows.head(3))
    for _ in range(30):  # warm up
        status, text = _request(port, "POST", "/invocations", good)
        assert status == 200, text
    rng = np.random.default_rng(0)
    statuses: dict[str, set[int]] = {}
    bodies: dict[str, str] = {}
    rss = []
    for i in range(1000):
        kind, body, ctype = malformed(i, rows, rng)
        status, text = _request(port, "POST", "/invocations", body, ctype)
        statuses.setdefault(kind, set()).add(status)
        bodies.setdefault(kind, text)
        assert 400 <= status < 500, (i, kind, status, text[:500])
        if i in (199, 999):
            rss.append(_rss(proc))
    assert len(statuses) == 17
    # the answers say what is wrong
    assert "unexpected column(s) ['gate_number']" in bodies["extra_field"]
    assert "missing column(s)" in bodies["missing_field"]
    assert "more than the 10000 allowed per request" in bodies["huge"]
    assert "required values are missing" in bodies["nan_in_required"]
    assert "must be finite" in bodies["infinity"]
    assert "malformed code(s) ['XXX']" in bodies["unknown_code"]
    # healthy afterwards: ping, and a good request scores
    assert _request(port, "GET", "/ping")[0] == 200
    status, text = _request(port, "POST", "/invocations", good)
    assert status == 200
    preds = json.loads(text)["predictions"]
    assert len(preds) == 3 and all(0 <= p["delay_probability"] <= 1 for p in preds)
    # memory flat: what the last 800 requests added, after the first 200 had warmed the allocator
    print(f"server RSS after 200 malformed requests {rss[0]:.0f} MB, after 1000 {rss[1]:.0f} MB")
    assert rss[1] - rss[0] < 25, rss
