"""Where one online request's time goes inside ``mlops-serve`` (bench B6's profile).

    MLOPS_HOME=<a home with a champion> python bench/serve_profile.py [--requests 3000] [--batch 3]

Drives the real ASGI app (``mlops_assets.serve.ServingApp``, the registered champion, payload log
on) in-process with one-row requests, ``--batch`` of them waiting at each turn of the event loop
(what 8 connections give: bench B6 measured 2.7 rows per model call), under cProfile; prints the
time per request by stage and the functions that take most of it. No HTTP: uvicorn's own share is
the difference between this and B6's server CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=3)
    a = ap.parse_args()
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.lib.storage import Lake
    from mlops_assets.serve import build_app
    from mlops_assets.settings import get_settings

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    version = registry.alias_version("champion").version
    app = build_app(f"models:/flight_delay/{version}", payload_log_uri=tempfile.mkdtemp(prefix="payload-"))
    lake = Lake(s.lake_uri)
    df = lake.read("flight_features", lake.partitions("flight_features")[-1])[FEATURE_COLUMNS].head(200)
    bodies = [json.dumps({"dataframe_split": df.iloc[[i % len(df)]].to_dict(orient="split")}).encode()
              for i in range(a.requests)]
    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": [(b"content-type", b"application/json")]}

    async def one(body):
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        out = []

        async def send(msg):
            out.append(msg)

        await app(scope, receive, send)
        assert out[0]["status"] == 200, out

    async def run(bodies):
        for i in range(0, len(bodies), a.batch):
            await asyncio.gather(*(one(b) for b in bodies[i:i + a.batch]))

    asyncio.run(run(bodies[:300]))  # warm
    t0 = time.perf_counter()
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(run(bodies))
    prof.disable()
    wall = time.perf_counter() - t0
    app.payload_log.close()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).sort_stats("tottime")
    st.print_stats(15)
    stages = {}
    for (file, _line, fn), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
        for name, key in (("parse + contract", ("serve.py", "parse_json_body")), ("model call", ("serving_model.py", "score")),
                          ("metrics", ("serve.py", "observe_probabilities")), ("payload log", ("payload_log.py", "record"))):
            if file.endswith(key[0]) and fn == key[1]:
                stages[name] = round(ct / a.requests * 1000, 3)
    print(json.dumps({"requests": a.requests, "rows_per_model_call": a.batch,
                      "ms_per_request_under_cprofile": round(wall / a.requests * 1000, 3), "stages_ms": stages}))
    print(buf.getvalue()[:4000])


if __name__ == "__main__":
    main()
