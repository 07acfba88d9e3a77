"""Replay the retraining policies offline with the very models a `weekly` year registered.

A week's challenger does not depend on the policy (its training set, trials and seeds are the
week's), so the `weekly` home's registry holds every model any policy could have promoted. This
script scores every labelled 2013 flight with each of them once, then replays `frozen`,
`weekly` and `health` (the platform's own verdict and gate, lib.health / lib.metrics, on the
data's calendar, at `--step` days) for each of the 7 alignments of the steps to the week, and
prints the mean weekly live ROC AUC and the trainings of each. One year through the daemon is
one of these alignments; the spread says how much of a difference between policies is chance.

    python bench/policy_replay.py --weekly-home .mlops/year/weekly [--step 7] [--gate point] [--health-days 7 ...]
"""

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add(d: str, n: int) -> str:
    return (date.fromisoformat(d) + timedelta(days=n)).isoformat()


def monday(d: str) -> str:
    x = date.fromisoformat(d)
    return (x - timedelta(days=x.weekday())).isoformat()


def score_all(home: Path) -> tuple[pd.DataFrame, dict]:
    import mlflow
    from mlflow import MlflowClient

    from mlops_assets.lib import features, source

    ex = features.examples_from_source(source.days_between("2013-01-01", "2013-12-31"))
    ex = ex[ex["label"].notna()].reset_index(drop=True)
    X = features.feature_matrix(ex)
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    models = {}
    for v in MlflowClient().search_model_versions("name='flight_delay'", max_results=1000):
        p = mlflow.pyfunc.load_model(f"models:/flight_delay/{v.version}").predict(X)["delay_probability"]
        models[v.tags["week"]] = {"p": p.to_numpy(), "data_end": v.tags["data_window"].rpartition("..")[2],
                                  "holdout": {"roc_auc": float(v.tags["holdout_roc_auc"]),
                                              "log_loss": float(v.tags["holdout_log_loss"])}}
    return ex[["date", "label"]], models


def replay(ex, models, policy: str, steps, health_policy, first_week: str, gate: str = "statistical") -> tuple[float, int]:
    from sklearn.metrics import roc_auc_score

    from mlops_assets.lib.health import assess, decide
    from mlops_assets.lib.metrics import GateDecision

    y, dates = ex["label"].to_numpy(), ex["date"].to_numpy()
    idx = {d: np.where(dates == d)[0] for d in sorted(set(dates))}
    champ, served, tried = None, {}, set()
    for a, b in steps:
        for d in idx:
            if a <= d <= b and champ and d > models[champ]["data_end"]:
                served[d] = champ
        lab = add(b, -1)  # outcomes land a day late
        week = monday(lab) if date.fromisoformat(lab).weekday() == 6 else add(monday(lab), -7)
        if week < first_week or week not in models:
            continue
        verdict = None
        if champ is not None:
            days = [d for d in sorted(served) if d <= lab and served[d] == champ][-health_policy.days:]
            rows = np.concatenate([idx[d] for d in days]) if days else np.array([], int)
            scored = pd.DataFrame({"date": dates[rows], "label": y[rows], "model_version": champ,
                                   "delay_probability": models[champ]["p"][rows]})
            verdict = assess(scored, champ, models[champ]["holdout"], (), health_policy)
        d = decide(policy, complete_week=week, champion_week=champ, verdict=verdict)
        if d is None or d.week in tried:
            continue
        tried.add(d.week)
        rows = np.concatenate([idx[x] for x in (add(d.week, i) for i in range(7)) if x in idx])
        if gate == "point":  # the gate before issue 13: holdout AUC point estimates
            champ_auc = None if champ is None else float(roc_auc_score(y[rows], models[champ]["p"][rows]))
            promote = GateDecision(models[d.week]["holdout"]["roc_auc"], champ_auc, 0.60, 0.0).promote
        else:  # the platform's gate: paired DeLong lower bound and the calibration guard, on the week's rows
            promote = GateDecision.compare(y[rows], models[d.week]["p"][rows],
                                           None if champ is None else models[champ]["p"][rows],
                                           min_auc=0.60, min_delta=0.0, log_loss_tolerance=0.01).promote
        if promote:
            champ = d.week
    aucs = []
    for w in sorted({monday(d) for d in idx}):
        ds = [add(w, i) for i in range(7) if add(w, i) in served]
        if "2013-03-04" <= w <= "2013-12-23" and ds:
            rows = np.concatenate([idx[d] for d in ds])
            aucs.append(roc_auc_score(y[rows], np.concatenate([models[served[d]]["p"][idx[d]] for d in ds])))
    return float(np.mean(aucs)), len(tried)


def main(argv=None) -> int:
    from mlops_assets.lib.health import HealthPolicy, first_full_week

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weekly-home", required=True, help="the home of a weekly year (mlops-year)")
    ap.add_argument("--step", type=int, default=7)
    ap.add_argument("--train-weeks", type=int, default=8)
    ap.add_argument("--gate", choices=("statistical", "point"), default="statistical",
                    help="the platform's gate (default) or the point-estimate gate it replaced")
    for f in ("days", "calibration_gap", "auc_tolerance", "log_loss_tolerance"):
        ap.add_argument(f"--health-{f.replace('_', '-')}", type=float, default=getattr(HealthPolicy(), f))
    args = ap.parse_args(argv)
    hp = HealthPolicy(days=int(args.health_days), calibration_gap=args.health_calibration_gap,
                      auc_tolerance=args.health_auc_tolerance, log_loss_tolerance=args.health_log_loss_tolerance)
    ex, models = score_all(Path(args.weekly_home))
    first = first_full_week("2013-01-01", args.train_weeks)
    out = {}
    for policy in ("frozen", "weekly", "health"):
        runs = []
        for offset in range(7):  # the steps' alignment to the week
            steps, d = [], "2013-01-01"
            if offset:
                steps.append((d, add(d, offset - 1)))
                d = add(d, offset)
            while d <= "2013-12-31":
                b = min(add(d, args.step - 1), "2013-12-31")
                steps.append((d, b))
                d = add(b, 1)
            runs.append(replay(ex, models, policy, steps, hp, first, args.gate))
        aucs, trains = [r[0] for r in runs], [r[1] for r in runs]
        out[policy] = {"mean_weekly_live_auc": float(np.mean(aucs)), "sd_over_alignments": float(np.std(aucs)),
                       "min": float(np.min(aucs)), "max": float(np.max(aucs)), "trainings_mean": float(np.mean(trains)),
                       "per_alignment": [round(a, 4) for a in aucs]}
        print(f"{policy:>7}: mean weekly live AUC {np.mean(aucs):.4f} (sd {np.std(aucs):.4f}, "
              f"{np.min(aucs):.4f}..{np.max(aucs):.4f} over 7 alignments), {np.mean(trains):.1f} trainings")
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
