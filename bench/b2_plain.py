"""B2's baseline: the weekly training cycle as plain Python in one process, calling the same lib/
functions with the same trials (and the same MLflow logging and registration) that the
training_job's steps call: training set -> sweeps -> challenger + gate -> champion."""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--week", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    from mlops_assets.defs.partitions import training_window_days
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.drift import build_reference
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES, feature_matrix
    from mlops_assets.lib.metrics import GateDecision, classification_metrics
    from mlops_assets.lib.models import FAMILIES, sweep
    from mlops_assets.lib.storage import Lake
    from mlops_assets.lib.training import make_training_set, score_split, train_trial
    from mlops_assets.settings import get_settings

    s = get_settings()
    lake = Lake(s.lake_uri)
    days = [d for d in training_window_days(args.week, s.train_weeks) if lake.has("training_examples", d)]
    ts = make_training_set(lake.read_many("training_examples", days))
    lake.write("training_set", args.week, ts)
    exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    parent = tracking.parent_run_id(exp, f"plain-{time.time()}")
    best = {}
    for fam in FAMILIES:
        trials = []
        for i, params in enumerate(sweep(fam, s.trials)):
            run_id = tracking.start_trial_run(exp, parent, f"{fam}-t{i}", {"family": fam})
            r = train_trial(fam, params, ts, seed=i)
            tracking.log_batch(run_id, params=params, metrics={f"valid_{k}": v for k, v in r.valid_metrics.items()})
            tracking.end_run(run_id)
            trials.append((r, run_id))
        best[fam] = max(trials, key=lambda t: t[0].valid_metrics["roc_auc"])
    holdout = ts[ts["split"] == "holdout"]
    scored = {fam: score_split(r.model, ts) for fam, (r, _) in best.items()}
    champ = registry.alias_version(registry.CHAMPION)
    champ_auc = None
    if champ is not None:
        p = registry.load_version(champ.version).predict(feature_matrix(holdout))["delay_probability"]
        champ_auc = classification_metrics(holdout["label"].to_numpy(), p.to_numpy())["roc_auc"]
    fam = max(scored, key=lambda f: scored[f]["roc_auc"])
    r, run_id = best[fam]
    ref = build_reference(ts[ts["split"] == "train"], DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    uri = registry.log_model(run_id, r.model, fam, holdout.head(5), ref)
    decision = GateDecision(scored[fam]["roc_auc"], champ_auc, s.gate_min_auc, s.gate_min_delta)
    version = registry.register(uri, {"week": args.week, "family": fam, "gate": str(decision.promote)},
                                alias=registry.CHALLENGER)
    if decision.promote:
        registry.set_alias(registry.CHAMPION, version)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "version": version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
