"""How truthful are the monitoring and promotion signals on 2013?  Measured, not assumed.

For 8-week windows starting every 4 weeks from 2013-01-07 (HistGradientBoosting, the platform's
own split: 6 weeks train, 1 valid, 1 holdout), with the platform's own lib/ code:

* **drift**: in-window weeks in alarm under the calibrated thresholds (should be 0) and under the
  old fixed PSI 0.25; the *out-of-sample* false-alarm rate, leave one week out (reference and
  thresholds from the other 5 weeks of the train split, the left-out week scored); alarms on the
  4 weeks after the window (real change, not false alarms); a synthetic +25 F temperature and a
  single-carrier week;
* **the gate on equal models**: two models of the same family and window, different seeds and
  subsamples, gated against each other on the holdout: how often the point-estimate gate and
  the statistical gate swap them;
* **the estimate before labels**: CBPE's daily ROC AUC / log loss against the realised values on
  the 28 days after the window, raw and with the holdout correction.

    python bench/signals.py [--out bench/signals.json]
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

STARTS = ["2013-01-07", "2013-02-04", "2013-03-04", "2013-04-01", "2013-04-29", "2013-05-27", "2013-06-24",
          "2013-07-22", "2013-08-19", "2013-09-16", "2013-10-14"]
HGB = {"learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0}


def days_from(start: str, n: int) -> list[str]:
    d0 = date.fromisoformat(start)
    return [(d0 + timedelta(days=i)).isoformat() for i in range(n)]


def drift_for(ex: pd.DataFrame, start: str) -> dict:
    from mlops_assets.lib.drift import build_reference, drift_report
    from mlops_assets.lib.features import CATEGORICAL_FEATURES as CAT
    from mlops_assets.lib.features import DRIFT_NUMERIC_FEATURES as NUM

    days = days_from(start, 42)  # the train split of an 8-week window
    tr = ex[ex["date"].isin(days)]
    ref = build_reference(tr, NUM, CAT)
    out = {"in_window_alarms": 0, "in_window_fixed_alarms": 0, "in_window_feature_weeks": 0}
    for s in range(len(days) - 6):
        rep = drift_report(ref, tr[tr["date"].isin(days[s:s + 7])])
        out["in_window_alarms"] += int(rep["alarm"].sum())
        out["in_window_fixed_alarms"] += int((rep["psi"] > 0.25).sum())
        out["in_window_feature_weeks"] += len(rep)
    lowo = tot = weeks_with_alarm = 0
    for k in range(6):
        held = days[7 * k:7 * k + 7]
        rest = ex[ex["date"].isin([d for d in days if d not in held])]
        rep = drift_report(build_reference(rest, NUM, CAT), ex[ex["date"].isin(held)])
        lowo += int(rep["alarm"].sum())
        tot += len(rep)
        weeks_with_alarm += int(rep["alarm"].any())
    out.update(lowo_alarms=lowo, lowo_feature_weeks=tot, lowo_weeks_with_alarm=weeks_with_alarm, lowo_weeks=6)
    after = []
    for w in range(4):
        rep = drift_report(ref, ex[ex["date"].isin(days_from(start, 56 + 7 * (w + 1))[-7:])])
        after.append(int(rep["alarm"].sum()))
    out["alarms_in_4_weeks_after"] = after
    week = tr[tr["date"].isin(days[14:21])]
    for name, shifted, feature in (("temp_plus_25F", week.assign(temp=week["temp"] + 25), "temp"),
                                   ("single_carrier", week.assign(carrier="UA"), "carrier")):
        rep = drift_report(ref, shifted).set_index("feature")
        out[f"synthetic_{name}"] = {"flagged": bool(rep.loc[feature, "alarm"]),
                                    "others_flagged": sorted(rep.index[rep["alarm"] & (rep.index != feature)])}
    return out


def gate_and_estimate_for(ex: pd.DataFrame, start: str) -> dict:
    from mlops_assets.lib.metrics import (GateDecision, classification_metrics, estimate_bias,
                                          estimated_performance)
    from mlops_assets.lib.training import make_training_set, predict_proba, train_trial

    window = days_from(start, 56)
    ts = make_training_set(ex[ex["date"].isin(window)])
    ho = ts[ts["split"] == "holdout"]
    models = []
    for seed in (0, 1):
        # equal quality: same family, window and settings; a different seed and a different 90% of the rows
        sub = ts[(ts["split"] != "train") | (np.random.default_rng(seed).random(len(ts)) < 0.9)]
        models.append(train_trial("hist_gradient_boosting", HGB, sub, seed=seed).model)
    p = [predict_proba(m, ho) for m in models]
    stat = GateDecision.compare(ho["label"], p[1], p[0], min_auc=0.6, min_delta=0.0)
    point = GateDecision(stat.challenger_auc, stat.champion_auc, 0.6, 0.0)
    bias = estimate_bias(ho["date"], ho["label"], p[0])
    err = []
    for day in days_from(start, 56 + 28)[56:]:  # the 4 weeks after the window
        g = ex[ex["date"] == day]
        if g["label"].nunique() < 2:
            continue
        q = predict_proba(models[0], g)
        real = classification_metrics(g["label"], q)
        raw, corr = estimated_performance(q), estimated_performance(q, bias)
        err.append({"day": day, "real_auc": real["roc_auc"], "raw_auc": raw["estimated_roc_auc"],
                    "corrected_auc": corr["estimated_roc_auc"], "real_ll": real["log_loss"],
                    "raw_ll": raw["estimated_log_loss"], "corrected_ll": corr["estimated_log_loss"]})
    return {"equal_models_auc_delta": stat.auc_delta, "ci": [stat.auc_delta_ci_low, stat.auc_delta_ci_high],
            "point_gate_swaps": point.promote, "statistical_gate_swaps": stat.promote,
            "estimate_bias": bias, "estimates": err}


def main(argv=None) -> int:
    from mlops_assets.lib.features import examples_from_source

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/signals.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ex = examples_from_source(days_from("2013-01-01", 364))
    ex = ex[ex["label"].notna()]
    per = {}
    for start in STARTS:
        per[start] = {"drift": drift_for(ex, start), **gate_and_estimate_for(ex, start)}
        d = per[start]["drift"]
        print(f"{start}: in-window alarms {d['in_window_alarms']} (fixed 0.25: {d['in_window_fixed_alarms']}) of "
              f"{d['in_window_feature_weeks']}; leave-one-week-out {d['lowo_alarms']}/{d['lowo_feature_weeks']}; "
              f"after {d['alarms_in_4_weeks_after']}; equal models delta {per[start]['equal_models_auc_delta']:+.4f} "
              f"point swap {per[start]['point_gate_swaps']} statistical {per[start]['statistical_gate_swaps']}",
              flush=True)
    est = pd.DataFrame([e for v in per.values() for e in v["estimates"]])
    summary = {
        "windows": len(STARTS),
        "drift_in_window_alarms": sum(v["drift"]["in_window_alarms"] for v in per.values()),
        "drift_in_window_fixed_psi_alarms": sum(v["drift"]["in_window_fixed_alarms"] for v in per.values()),
        "drift_in_window_feature_weeks": sum(v["drift"]["in_window_feature_weeks"] for v in per.values()),
        "drift_lowo_false_alarm_rate_per_feature_week": sum(v["drift"]["lowo_alarms"] for v in per.values())
        / sum(v["drift"]["lowo_feature_weeks"] for v in per.values()),
        "drift_lowo_weeks_with_any_alarm": sum(v["drift"]["lowo_weeks_with_alarm"] for v in per.values())
        / sum(v["drift"]["lowo_weeks"] for v in per.values()),
        "drift_synthetic_temp_flagged": sum(v["drift"]["synthetic_temp_plus_25F"]["flagged"] for v in per.values()),
        "drift_synthetic_carrier_flagged": sum(v["drift"]["synthetic_single_carrier"]["flagged"] for v in per.values()),
        "gate_equal_models_point_swaps": sum(bool(v["point_gate_swaps"]) for v in per.values()),
        "gate_equal_models_statistical_swaps": sum(bool(v["statistical_gate_swaps"]) for v in per.values()),
        "estimate_days": len(est),
    }
    for kind in ("raw", "corrected"):
        a = (est[f"{kind}_auc"] - est["real_auc"]).abs()
        b = (est[f"{kind}_ll"] - est["real_ll"]).abs()
        summary[f"estimate_{kind}_auc_abs_error_median"] = float(a.median())
        summary[f"estimate_{kind}_auc_abs_error_p90"] = float(a.quantile(0.9))
        summary[f"estimate_{kind}_auc_mean_error"] = float((est[f"{kind}_auc"] - est["real_auc"]).mean())
        summary[f"estimate_{kind}_log_loss_abs_error_median"] = float(b.median())
        summary[f"estimate_{kind}_log_loss_abs_error_p90"] = float(b.quantile(0.9))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps({"summary": summary, "windows": per}, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
