"""Where ``training_job``'s seconds go: B2's week (4-week window, 3 trials x 3 families, week of
2013-02-04) run once with ``dagster job execute`` under py-spy, and the same week's
``bench/b2_plain.py``; prints each step's wall time (from the run's event log) and the sampled
profile of the whole command grouped by what it was doing.

    python bench/training_profile.py [--week 2013-02-04] [--no-py-spy]

py-spy (``pip install py-spy``) samples every process of the command (``--subprocesses``), so
trial steps and the serving process that infra validation starts are in the profile too.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.run import BIN, _data_run, _env, _home  # noqa: E402

# A sample is charged to the first of these found in its stack (innermost frame first).
BUCKETS = [
    ("import", ("<frozen importlib._bootstrap>", "_find_and_load")),
    ("fit (sklearn / torch)", ("fit (sklearn/", "_fit_", "torch/optim", "backward (torch/")),
    ("permutation importance", ("permutation_importance",)),
    ("predict / score", ("predict_proba", "predict (", "decision_function")),
    ("MLflow tracking / registry", ("mlflow/store", "mlflow/tracking", "mlflow/pyfunc/__init__", "mlflow/models")),
    ("serving process (infra validation)", ("mlops_assets/serve.py", "uvicorn/")),
    ("Dagster (events, storage, executor)", ("dagster/_core",)),
    ("lake IO (parquet)", ("pyarrow/", "mlops_assets/lib/storage.py")),
]


def bucket(stack: str) -> str:
    frames = stack.split(";")[::-1]  # innermost first
    for frame in frames:
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other (idle waits, interpreter start, the rest)"


def profile(cmd, env, out: Path, use_py_spy: bool) -> float:
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if use_py_spy and spy:  # on-CPU samples only (no --idle): where the CPU time goes
        cmd = [spy, "record", "--subprocesses", "--rate", "100", "--format", "raw", "-o", str(out), "--", *cmd]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    return time.perf_counter() - t0


def summarise(raw: Path) -> list[tuple[str, float]]:
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[bucket(stack)] += int(n) / 100.0  # --rate 100: one sample = 10 ms of one thread
    return counts.most_common()


def step_times(home: Path) -> list[tuple[str, float]]:
    code = """
import dagster as dg, json
with dg.DagsterInstance.get() as inst:
    run = inst.get_runs(limit=1)[0]
    starts, out = {}, []
    for e in inst.all_logs(run.run_id):
        if e.dagster_event is None or not e.step_key:
            continue
        t = e.dagster_event.event_type_value
        if t == "STEP_START":
            starts[e.step_key] = e.timestamp
        elif t in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in starts:
            out.append((e.step_key, e.timestamp - starts[e.step_key]))
    print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], env=_env(home), cwd=ROOT, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else [("(event log unreadable)", 0.0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--week", default="2013-02-04")
    ap.add_argument("--no-py-spy", action="store_true")
    args = ap.parse_args()
    prep = _home()
    _data_run("2013-01-01", "2013-02-10", True, prep)
    extra = {"MLOPS_TRAIN_WEEKS": "4", "MLOPS_TRIALS": "3"}
    tmp = Path(tempfile.mkdtemp(prefix="training-profile-"))
    results = {}
    for name, cmd in (
        ("training_job", [str(BIN / "dagster"), "job", "execute", "-m", "mlops_assets.definitions", "-j", "training_job",
                          "--tags", json.dumps({"dagster/partition": args.week})]),
        ("plain", [sys.executable, str(ROOT / "bench/b2_plain.py"), "--week", args.week]),
    ):
        home = _home()
        shutil.copytree(prep / "lake", home / "lake")
        shutil.copytree(prep / "landing", home / "landing")
        raw = tmp / f"{name}.txt"
        wall = profile(cmd, _env(home, **extra), raw, not args.no_py_spy)
        results[name] = wall
        print(f"\n## {name}: {wall:.1f} s wall" + (" (under py-spy)" if raw.exists() else ""))
        if name == "training_job":
            print("\n| step | s |\n|---|---|")
            for key, s in step_times(home):
                print(f"| {key} | {s:.2f} |")
        if raw.exists():
            rows = summarise(raw)
            total = sum(s for _, s in rows)
            print(f"\n| sampled CPU seconds, all processes ({total:.1f} s) | s | share |\n|---|---|---|")
            for what, s in rows:
                print(f"| {what} | {s:.1f} | {s / total:.0%} |")
    print(f"\nratio {results['training_job'] / results['plain']:.2f} (one run each; B2 takes the median of 3)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
