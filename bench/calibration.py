"""Does recalibrating on the valid week help, and does the test know when?  Measured on 2013.

For 8-week windows starting every week from 2013-01-07 (HistGradientBoosting at the grid's
defaults, the platform's split: 6 weeks train, 1 valid, 1 holdout), with the platform's own lib/:
the Cox calibration test on the valid week (``lib.calibration``), then the log loss and expected
calibration error on the holdout and on the 7 days after the window (what the model would serve
first), for the raw model, the model always recalibrated on the valid week, and the platform's
rule (recalibrated only when the test rejects at ``--alpha``).  Paired differences carry their
standard error over the windows.

    python bench/calibration.py [--out bench/calibration.json] [--alpha 0.01]
"""

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HGB = {"learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0}


def days_from(start: str, n: int) -> list[str]:
    d0 = date.fromisoformat(start)
    return [(d0 + timedelta(days=i)).isoformat() for i in range(n)]


def one_window(ex: pd.DataFrame, start: str, alpha: float) -> dict:
    from mlops_assets.lib.calibration import Recalibrated, calibration_test
    from mlops_assets.lib.metrics import calibration_table, classification_metrics
    from mlops_assets.lib.training import make_training_set, predict_proba, train_trial

    window = days_from(start, 56)
    ts = make_training_set(ex[ex["date"].isin(window)])
    model = train_trial("hist_gradient_boosting", HGB, ts, seed=0).model
    va = ts[ts["split"] == "valid"]
    test = calibration_test(va["label"], predict_proba(model, va))
    always = Recalibrated(model, test.intercept, test.slope)
    rule = always if test.needs_recalibration(alpha) else model
    out = {"start": start, "test": test.as_dict(), "recalibrated": rule is always}
    after = ex[ex["date"].isin(days_from(start, 63)[56:])]
    for name, rows in (("holdout", ts[ts["split"] == "holdout"]), ("next_week", after)):
        for kind, m in (("raw", model), ("always", always), ("rule", rule)):
            p = predict_proba(m, rows)
            met = classification_metrics(rows["label"], p)
            out[f"{name}_{kind}_log_loss"] = met["log_loss"]
            out[f"{name}_{kind}_auc"] = met["roc_auc"]
            out[f"{name}_{kind}_ece"] = calibration_table(rows["label"], p)["ece"]
    return out


def main(argv=None) -> int:
    from mlops_assets.lib.features import examples_from_source

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/calibration.json")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--windows", type=int, default=0, help="only the first N windows (CI's short run)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ex = examples_from_source(days_from("2013-01-01", 365))
    ex = ex[ex["label"].notna()]
    starts = [d for d in days_from("2013-01-07", 365)[::7] if date.fromisoformat(d) + timedelta(days=63) <= date(2013, 12, 31)]
    if args.windows:
        starts = starts[:args.windows]
    rows = []
    for start in starts:
        r = one_window(ex, start, args.alpha)
        rows.append(r)
        print(f"{start}: valid a={r['test']['intercept']:+.3f} b={r['test']['slope']:.3f} p={r['test']['p_value']:.2g} "
              f"{'RECALIBRATE' if r['recalibrated'] else 'keep':11s} holdout log loss raw {r['holdout_raw_log_loss']:.4f} "
              f"always {r['holdout_always_log_loss']:.4f}; next week raw {r['next_week_raw_log_loss']:.4f} "
              f"always {r['next_week_always_log_loss']:.4f}", flush=True)
    df = pd.DataFrame(rows)
    summary = {"windows": len(df), "alpha": args.alpha, "recalibrated": int(df["recalibrated"].sum())}
    for name in ("holdout", "next_week"):
        for kind in ("raw", "always", "rule"):
            summary[f"{name}_{kind}_log_loss_mean"] = float(df[f"{name}_{kind}_log_loss"].mean())
            summary[f"{name}_{kind}_ece_mean"] = float(df[f"{name}_{kind}_ece"].mean())
        for kind in ("always", "rule"):
            d = df[f"{name}_{kind}_log_loss"] - df[f"{name}_raw_log_loss"]
            summary[f"{name}_{kind}_minus_raw_log_loss"] = float(d.mean())
            summary[f"{name}_{kind}_minus_raw_log_loss_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            summary[f"{name}_{kind}_better_windows"] = int((d < 0).sum())
        summary[f"{name}_auc_max_abs_change"] = float((df[f"{name}_always_auc"] - df[f"{name}_raw_auc"]).abs().max())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps({"summary": summary, "windows": rows}, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
