"""``make bench``: each benchmark against a baseline measured in the same run; medians of several
runs; one table.  ``--smoke`` runs tiny sizes (CI keeps them working; the figures mean nothing).
``--write`` writes the table to bench/RESULTS.md.

    python bench/run.py [--smoke] [--only B1,B3a] [--write]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PYTHONWARNINGS": "ignore"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _timed(cmd, env, cwd=ROOT) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return dt


def _home() -> Path:
    from mlops_assets.settings import DAGSTER_YAML

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    return home


# --- B1 ------------------------------------------------------------------------------------------
def b1(smoke: bool) -> dict:
    home = _home()
    env = _env(home)
    n = 1 if smoke else 5
    ours = [_timed([str(BIN / "dagster"), "definitions", "validate", "-m", "mlops_assets.definitions"], env) for _ in range(n)]
    base = [_timed([str(BIN / "dagster"), "definitions", "validate", "-f", str(ROOT / "bench/three_assets.py")], env)
            for _ in range(n)]
    return _row("B1", "code location load (definitions validate), s", statistics.median(ours),
                statistics.median(base), "ratio <= 1.5", lambda r: r <= 1.5)


# --- B3 ------------------------------------------------------------------------------------------
def _data_run(first: str, last: str, single: bool, home: Path, assets=None) -> float:
    """Ingestion + features through Dagster in-process: one range run, or one run per day."""
    code = f"""
import time, dagster as dg
from mlops_assets.settings import get_settings
from mlops_assets.lib.source import replay, days_between
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.ingestion import assets as I
from mlops_assets.defs.features import assets as F
from datetime import date, timedelta
s = get_settings()
replay(s.landing_uri, (date.fromisoformat({last!r}) + timedelta(days=1)).isoformat(), {first!r})
res = build_resources(s)
data = [I.raw_flights, I.raw_weather, I.flight_outcomes, F.flight_features, F.training_examples]
feats = [F.flight_features]
with dg.DagsterInstance.get() as inst:
    if {assets!r} == "features":
        assert dg.materialize(data[:3], resources=res, instance=inst, tags={{"dagster/asset_partition_range_start": {first!r}, "dagster/asset_partition_range_end": {last!r}}}).success
        sel = feats
    else:
        sel = data
    t0 = time.perf_counter()
    if {single!r}:
        assert dg.materialize(sel, resources=res, instance=inst, tags={{"dagster/asset_partition_range_start": {first!r}, "dagster/asset_partition_range_end": {last!r}}}).success
    else:
        for d in days_between({first!r}, {last!r}):
            assert dg.materialize(sel, resources=res, instance=inst, partition_key=d).success
    print("SECONDS", time.perf_counter() - t0)
"""
    out = subprocess.run([sys.executable, "-c", code], env=_env(home), cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return float(next(line for line in out.stdout.splitlines() if line.startswith("SECONDS")).split()[1])


def b3a(smoke: bool) -> dict:
    short, long = ("2013-01-01", "2013-01-03"), ("2013-01-01", "2013-01-09")
    if not smoke:
        short, long = ("2013-01-01", "2013-01-30"), ("2013-01-01", "2013-03-31")
    n = 1 if smoke else 3
    a = statistics.median(_data_run(*long, True, _home()) for _ in range(n))
    b = statistics.median(_data_run(*short, True, _home()) for _ in range(n))
    return _row("B3a", f"ingestion + features, {'9' if smoke else '90'} days vs {'3' if smoke else '30'}, s", a, b,
                "ratio <= 3.2", lambda r: r <= 3.2)


def b3b(smoke: bool) -> dict:
    days = ("2013-01-01", "2013-01-03") if smoke else ("2013-01-01", "2013-01-30")
    n = 1 if smoke else 3
    single = statistics.median(_data_run(*days, True, _home(), "features") for _ in range(n))
    many = statistics.median(_data_run(*days, False, _home(), "features") for _ in range(n))
    return _row("B3b", f"features for {'3' if smoke else '30'} days: one range run vs one run per day, s",
                single, many, "single run >= 3x faster (ratio <= 0.33)", lambda r: r <= 1 / 3)


# --- B2 and B8: one weekly cycle ------------------------------------------------------------------
_CYCLE: dict = {}


def _cycle(smoke: bool) -> dict:
    """The weekly cycle both B2 and B8 time: its configuration, a prepared lake (ingestion and
    features through Dagster) that each timed run copies, and ``training_job``'s times, measured
    once per bench run and shared (B8 compares the same job with its peer)."""
    import shutil

    if smoke in _CYCLE:
        return _CYCLE[smoke]
    weeks, trials, week = ("2", "1", "2013-01-14") if smoke else ("4", "3", "2013-02-04")
    prep = _home()
    _data_run("2013-01-01", "2013-01-20" if smoke else "2013-02-10", True, prep)  # the examples every side trains from

    def fresh():
        home = _home()
        shutil.copytree(prep / "lake", home / "lake")
        shutil.copytree(prep / "landing", home / "landing")
        return home

    c = {"weeks": weeks, "trials": trials, "week": week, "n": 1 if smoke else 3, "fresh": fresh,
         "extra": {"MLOPS_TRAIN_WEEKS": weeks, "MLOPS_TRIALS": trials}}
    c["job"] = [_timed([str(BIN / "dagster"), "job", "execute", "-m", "mlops_assets.definitions", "-j", "training_job",
                        "--tags", json.dumps({"dagster/partition": week})], _env(h, **c["extra"]))
                for h in [fresh() for _ in range(c["n"])]]
    _CYCLE[smoke] = c
    return c


def b2(smoke: bool) -> dict:
    c = _cycle(smoke)
    plain = [_timed([sys.executable, str(ROOT / "bench/b2_plain.py"), "--week", c["week"]], _env(h, **c["extra"]))
             for h in [c["fresh"]() for _ in range(c["n"])]]
    d, p = statistics.median(c["job"]), statistics.median(plain)
    return _row("B2", f"weekly training cycle ({c['trials']} trials x 3 families, {c['weeks']}-week window): "
                "training_job via the CLI vs plain Python making the same lib/ calls (bench/b2_plain.py), s "
                f"(orchestration overhead {d - p:+.1f} s; runs {', '.join(f'{x:.1f}' for x in c['job'])} vs "
                f"{', '.join(f'{x:.1f}' for x in plain)})", d, p, "ratio <= 1.3", lambda r: r <= 1.3)


def b8(smoke: bool) -> dict:
    """The same weekly cycle as B2 through our training_job (B2's own runs), against a Metaflow flow
    on its local runtime (a task per trial in a `foreach`, at most as many at once as there are CPUs)."""
    c = _cycle(smoke)
    extra = {**c["extra"], "METAFLOW_USER": "bench"}
    peer = []
    for h in [c["fresh"]() for _ in range(c["n"])]:  # the flow's local datastore (.metaflow) goes in the home
        peer.append(_timed([sys.executable, str(ROOT / "bench/metaflow_cycle.py"), "--quiet", "run", "--week", c["week"],
                            "--max-workers", str(os.cpu_count() or 2)], _env(h, **extra), cwd=h))
    return _row("B8", f"weekly training cycle ({c['trials']} trials x 3 families, {c['weeks']}-week window): "
                "training_job via the CLI (B2's runs) vs the same cycle as a Metaflow flow (foreach over the trials, "
                "local runtime), s", statistics.median(c["job"]), statistics.median(peer),
                "ratio <= 1 (no slower than the peer)", lambda r: r <= 1)


# --- B9 ------------------------------------------------------------------------------------------
def b9(smoke: bool) -> dict:
    """The registry calls a training and a scoring run make, with a long history against a fresh one."""
    sizes = "1,20" if smoke else "1,50,200"
    out = subprocess.run([sys.executable, str(ROOT / "bench/registry_scale.py"), "--sizes", sizes,
                          "--repeats", "3" if smoke else "9"], capture_output=True, text=True, cwd=ROOT,
                         env=_env(_home()))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    r = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    calls = [k for k in r["rows"][0] if k != "versions"]
    total = {row["versions"]: sum(row[k] for k in calls) for row in r["rows"]}
    first, last = r["rows"][0], r["rows"][-1]
    per_call = ", ".join(f"{k[:-3]} {first[k]:.1f} -> {last[k]:.1f}" for k in calls)
    between = "; ".join(f"{n} versions x{total[n] / total[first['versions']]:.2f}" for n in list(total)[1:-1])
    return _row("B9", f"MLflow registry (SQLite) with {last['versions']} versions vs {first['versions']}: register + "
                f"read alias + move champion + read tags, ms per set of calls ({per_call} ms"
                f"{'; ' + between if between else ''})",
                total[last["versions"]], total[first["versions"]], "ratio <= 1.2", lambda x: x <= 1.2)


# --- B4 ------------------------------------------------------------------------------------------
def b4(smoke: bool) -> dict:
    args = ["--rows", "5000", "--epochs", "1", "--repeats", "1"] if smoke else ["--rows", "200000", "--epochs", "3", "--repeats", "3"]
    out = subprocess.run([sys.executable, str(ROOT / "bench/b4_torch_throughput.py"), *args, "--devices", "cpu"],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("JSON "))[5:])
    # the "ratio" column is baseline/project here: higher rows/s is better
    a, b = res["cpu"]["on_device_rows_per_s"], res["cpu"]["dataloader_rows_per_s"]
    return {"id": "B4", "what": "torch MLP training on CPU, rows/s: on-device batches vs DataLoader",
            "project": a, "baseline": b, "ratio": a / b, "target": ">= 5x", "ok": a / b >= 5}


# --- B5, B6 --------------------------------------------------------------------------------------
_CHAMPION_HOME: list = []


def _champion_home() -> Path:
    """A home with two weeks of data and a registered champion (trained once per bench run)."""
    if _CHAMPION_HOME:
        return _CHAMPION_HOME[0]
    home = _home()
    _data_run("2013-01-01", "2013-01-20", True, home)
    extra = {"MLOPS_TRAIN_WEEKS": "2", "MLOPS_TRIALS": "1"}
    _timed([str(BIN / "dagster"), "job", "execute", "-m", "mlops_assets.definitions", "-j", "training_job",
            "--tags", json.dumps({"dagster/partition": "2013-01-14"})], _env(home, **extra))
    _CHAMPION_HOME.append(home)
    return home


def _b56(args) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench/b5_b6.py"), *args], env=_env(_champion_home()),
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def b5(smoke: bool) -> dict:
    r = _b56(["b5", "--rows", "20000" if smoke else "1000000", "--repeats", "1" if smoke else "3"])
    # The bare estimator is the fitted scikit-learn Pipeline the champion wraps, called on the
    # prepared feature matrix: the ratio is what the registry, pyfunc and feature selection add.
    # Also reported: the Pipeline's last step alone on its already-encoded matrix (for a linear
    # model that is one matrix product, and the encoding it skips is most of the work).
    return _row("B5", f"batch scoring of {r['rows']:,} rows: champion v{r['champion_version']} ({r['family']}) "
                "through the registry (pyfunc) vs the bare fitted Pipeline's `predict_proba` on the prepared "
                f"matrix, s (its last step alone on the encoded matrix: {r['last_step_only_s']:.3f} s)",
                r["through_registry_s"], r["bare_estimator_s"], "ratio <= 1.3", lambda x: x <= 1.3)


def b6(smoke: bool) -> dict:
    r = _b56(["b6", "--requests", "100" if smoke else "2000", "--concurrency", "8", "--rounds", "1" if smoke else "3"])
    prof = r["profile"]
    row = _row("B6", f"online scoring, `mlops-serve` (one process, micro-batching, payload log on), champion "
               f"{r['family']}, {r['requests']} one-row requests x 8 concurrent kept-alive connections, median of "
               f"{r['rounds']} rounds after 200 warm-up requests (p99 per round {r['p99_ms_per_round']} ms; "
               f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, {r['errors']} errors; server CPU "
               f"{prof['server_cpu_ms_per_request']:.2f} ms/request, {prof.get('rows_per_model_call', 1):.1f} rows per "
               "model call): p99 vs in-process p99, ms",
               r["p99_ms"], r["inprocess_p99_ms"], "p99 <= 10 ms", lambda x: True)
    row["ok"] = r["p99_ms"] <= 10 and r["errors"] == 0
    return row


# --- B7 ------------------------------------------------------------------------------------------
def b7(smoke: bool) -> dict:
    rows = 20_000 if smoke else 1_000_000
    code = f"""
import resource, numpy as np, pandas as pd
from mlops_assets.lib import source, features
day = "2013-06-14"
f = source.feeds_for_day(day)
planes = source.load_reference("planes")
base = f["schedules"]
idx = np.random.default_rng(0).integers(0, len(base), {rows})
sched = base.iloc[idx].reset_index(drop=True)
sched["flight"] = np.arange(1, len(sched) + 1) % 9999 + 1
sched["sched_dep_time"] = (np.arange(len(sched)) // 9999) % 2359
df_bytes = sched.memory_usage(deep=True).sum()
import gc, threading, time, psutil
gc.collect()
proc = psutil.Process()
before = proc.memory_info().rss
peak = [before]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
feats = features.build_features(sched, f["weather"], planes)
stop.set(); t.join()
peak[0] = max(peak[0], proc.memory_info().rss)
print("RESULT", peak[0] - before, df_bytes, len(feats))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    grow, df_bytes, n = next(line for line in out.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    return _row("B7", f"peak RSS growth (sampled) building features for a {int(n):,}-row day vs the day's DataFrame, MB",
                int(grow) / 2**20, int(df_bytes) / 2**20, "ratio <= 4", lambda r: r <= 4)


def _row(i, what, project, baseline, target, check):
    r = project / baseline if baseline else float("inf")
    return {"id": i, "what": what, "project": project, "baseline": baseline, "ratio": r, "target": target,
            "ok": bool(check(r))}


NOTES = "<!-- written by hand below; `bench/run.py --write` rewrites what is above -->"
BENCHES = {"B1": b1, "B2": b2, "B3a": b3a, "B3b": b3b, "B4": b4, "B5": b5, "B6": b6, "B7": b7, "B8": b8, "B9": b9}


def table(rows) -> str:
    lines = ["| # | benchmark | project | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v: f"{v:,.0f}") if r["id"] == "B4" else (lambda v: f"{v:.3g}")
        lines.append(f"| {r['id']} | {r['what']} | {fmt(r['project'])} | {fmt(r['baseline'])} | {r['ratio']:.2f} | "
                     f"{r['target']} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b in args.only.split(",")]
    started = time.perf_counter()
    rows = []
    for b in chosen:
        t0 = time.perf_counter()
        rows.append(BENCHES[b](args.smoke))
        print(f"{b} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    text = table(rows)
    print(text)
    if args.write:  # the table is rewritten; what is written by hand below NOTES stays
        path = ROOT / "bench" / "RESULTS.md"
        notes = path.read_text().partition(NOTES)[2] if path.exists() else ""
        path.write_text(
            "# Benchmark results\n\n" f"`python bench/run.py --write` on this 2-core machine, "
            f"{time.strftime('%Y-%m-%d')}, all in one run ({time.perf_counter() - started:.0f} s). Medians; "
            "each baseline measured in the same run.\n\n" + text + "\n\n" + NOTES + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
