"""Peak memory of every step at its largest realistic input, for sizing the step pods.

Each group of steps runs as one ``dagster`` CLI process with the in-process executor, as a step pod
runs one step in one process; the process's high-water mark (``ru_maxrss`` of the finished child)
is charged to every step of the group, so each figure is an upper bound of that step's own peak:

* ingestion (raw_flights, raw_weather, flight_outcomes): 2013 as one single-run backfill;
* features (flight_features, training_examples): the same year, one run;
* monitoring (flight_delay_predictions, feature_drift, prediction_performance): a catch-up of the
  rest of the year (2013-03-11..2013-12-30) in one run, scored by an 8-week model;
* platform_health and shadow_promotion: once, after it;
* training (training_set, every family's plan/trial/pick-best, challenger, champion,
  model_deployment): ``training_job`` on a 52-week training set (week 2013-12-23), last;
* online (online_predictions, online_feature_drift): a day of 1,000,000 recorded online rows in
  2,000 payload files
  (``--only online`` measures this group alone and keeps the others' committed figures).

    python bench/step_memory.py [--out bench/step_memory.json] [--short] [--only online]

``--short`` (CI): two weeks instead of a year and an 8-week training set; the figures must then
stay below the committed full-size ones (tests/k8s/test_step_sizes.py).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def peak_mb(args: list[str], env: dict, label: str) -> tuple[float, float]:
    """(peak RSS in MiB of the ``dagster`` process running ``args``, seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, str(BIN / "dagster"), *args, "-m", "mlops_assets.definitions"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    kb = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    print(f"{label:<48} peak {kb / 1024:8.0f} MiB  {dt:6.0f}s", flush=True)
    return kb / 1024, dt


def online_peak(home: Path, env: dict, short: bool) -> tuple[float, float]:
    """A day of recorded online requests (one row each, 500 per payload file, as a server flushes
    them) gathered by ``online_predictions``."""
    import numpy as np

    from mlops_assets.lib import features, payload_log
    from mlops_assets.lib.storage import Location

    files = 20 if short else 2000
    version = _a_registered_version()
    X = features.examples_from_source(["2013-03-01"])[features.FEATURE_COLUMNS].head(500).reset_index(drop=True)
    rows = features.check_scoring_input(X)
    day = "2026-06-01"
    t = 1780272000.0  # 2026-06-01T00:00:00Z
    loc = Location(str(home / "landing" / "online"))
    for f in range(files):
        batch = [(f"r{f}-{i}", t + f, features.ScoringInput([c[i:i + 1] for c in rows.cats], rows.nums[i:i + 1]),
                  np.array([0.2])) for i in range(len(X))]
        loc.write_parquet(f"{day}/bench-{f:05d}.parquet", payload_log._frame(batch, version))
    return peak_mb(["asset", "materialize", "--select", "online_predictions,online_feature_drift", "--partition", day],
                   env, f"online_predictions + drift, {files * len(X):,} rows in {files} files")


def _a_registered_version() -> str:
    """A small real model (a logistic regression on two weeks of 2013, with its drift reference)
    registered in the home's MLflow: the version the recorded rows name."""
    import uuid

    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.drift import build_reference
    from mlops_assets.lib.features import (
        CATEGORICAL_FEATURES,
        DRIFT_NUMERIC_FEATURES,
        examples_from_source,
    )
    from mlops_assets.lib.training import make_training_set, train_trial
    from mlops_assets.settings import get_settings

    s = get_settings()
    ts = make_training_set(examples_from_source([f"2013-02-{d:02d}" for d in range(1, 15)]))
    exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    parent = tracking.parent_run_id(exp, f"step-memory-{uuid.uuid4().hex[:8]}")
    run_id = tracking.start_trial_run(exp, parent, "step-memory", {"family": "logistic_regression"})
    r = train_trial("logistic_regression", {"C": 1.0}, ts)
    ref = build_reference(ts[ts["split"] == "train"], DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    uri = registry.log_model(run_id, r.model, "logistic_regression", ts[ts["split"] == "holdout"].head(5), ref)
    tracking.end_run(run_id)
    return str(registry.register(uri, {"mlflow_run_id": run_id, "family": "logistic_regression"}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/step_memory.json")
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--home", help="work folder (default: a temporary one)")
    ap.add_argument("--only", choices=["online"], help="measure this group alone, keep the rest of --out")
    args = ap.parse_args(argv)
    from mlops_assets.lib.source import replay

    home = Path(args.home or tempfile.mkdtemp(prefix="step-memory-"))
    last = "2013-01-14" if args.short else "2013-12-30"
    weeks = 2 if args.short else 52
    week = "2013-01-07" if args.short else "2013-12-23"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_LAKE_URI", "MLOPS_LANDING_URI")}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "MLOPS_EXECUTOR": "in_process",
                "MLOPS_TRIALS": "1", "MLOPS_INFRA_VALIDATION": "off", "PYTHONWARNINGS": "ignore"})
    os.environ.update({k: env[k] for k in ("MLOPS_HOME", "DAGSTER_HOME")})
    for k in ("MLFLOW_TRACKING_URI", "MLOPS_LAKE_URI", "MLOPS_LANDING_URI"):  # this process too: the home's own
        os.environ.pop(k, None)
    from mlops_assets.settings import ensure_dagster_home, get_settings

    get_settings.cache_clear()
    ensure_dagster_home(get_settings())
    if args.only == "online":
        result = json.loads(Path(args.out).read_text())
        p, sec = online_peak(home, env, args.short)
        result["groups"]["online"] = {"peak_mb": round(p, 1), "seconds": round(sec, 1)}
        for op in ("online_predictions", "online_feature_drift"):
            result["steps"][op] = {"peak_mb": round(p, 1), "group": "online"}
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    from datetime import date, timedelta

    # outcomes land a day late: the last day's come with the day after
    replay(str(home / "landing"), (date.fromisoformat(last) + timedelta(days=1)).isoformat(), "2013-01-01")
    rng = ["--partition-range", f"2013-01-01...{last}"]
    groups = {}
    groups["ingestion"] = peak_mb(["asset", "materialize", "--select", "raw_flights,raw_weather,flight_outcomes", *rng],
                                  env, f"ingestion 2013-01-01..{last}")
    groups["features"] = peak_mb(["asset", "materialize", "--select", "flight_features,training_examples", *rng],
                                 env, f"features 2013-01-01..{last}")
    # the monitoring catch-up needs a model trained before the days it scores
    m_env = {**env, "MLOPS_TRAIN_WEEKS": "2" if args.short else "8"}
    m_week, m_first = ("2013-01-07", "2013-01-14") if args.short else ("2013-03-04", "2013-03-11")
    scoring_model = peak_mb(["job", "execute", "-j", "training_job", "--tags", json.dumps({"dagster/partition": m_week})],
                            m_env, f"training_job (the scoring model, week {m_week})")
    groups["monitoring"] = peak_mb(["asset", "materialize", "--select",
                                    "flight_delay_predictions,feature_drift,prediction_performance",
                                    "--partition-range", f"{m_first}...{last}"], m_env, f"monitoring {m_first}..{last}")
    groups["platform"] = peak_mb(["asset", "materialize", "--select", "platform_health,shadow_promotion"], m_env,
                                 "platform_health, shadow_promotion")
    # last: the 52-week model may become champion, and the catch-up above needs the earlier one
    tr_env = {**env, "MLOPS_TRAIN_WEEKS": str(weeks)}
    if args.short:  # the same job as the scoring model's (week, 2 weeks): its measurement, not a second run
        assert (week, str(weeks)) == (m_week, m_env["MLOPS_TRAIN_WEEKS"])
        groups["training"] = scoring_model
    else:
        groups["training"] = peak_mb(["job", "execute", "-j", "training_job", "--tags",
                                      json.dumps({"dagster/partition": week})], tr_env,
                                     f"training_job {weeks} weeks ({week})")
    members = {
        "ingestion": ["raw_flights", "raw_weather", "flight_outcomes"],
        "features": ["flight_features", "training_examples"],
        "training": ["training_set", "challenger", "champion", "model_deployment"]
        + [f"{k}_{f}{s}" for f in ("hist_gradient_boosting", "logistic_regression", "torch_mlp")
           for k, s in (("plan", "_trials"), ("train", "_trial"), ("pick_best", ""))],
        "monitoring": ["flight_delay_predictions", "feature_drift", "prediction_performance"],
        "platform": ["platform_health", "shadow_promotion"],
    }
    groups["online"] = online_peak(home, env, args.short)
    members["online"] = ["online_predictions", "online_feature_drift"]
    steps = {op: {"peak_mb": round(groups[g][0], 1), "group": g} for g, ops in members.items() for op in ops}
    result = {"short": args.short, "training_weeks": weeks, "last_day": last,
              "groups": {g: {"peak_mb": round(p, 1), "seconds": round(s, 1)} for g, (p, s) in groups.items()},
              "steps": steps}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["groups"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
