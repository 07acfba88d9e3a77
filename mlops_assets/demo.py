"""``make demo``: the whole cycle through Dagster on the embedded default, then a summary.

1. replay the source system into the landing zone (``mlops-replay``);
2. ingestion + features for the window, one single-run range backfill (``dg launch --assets``);
3. the weekly training job for two weeks (``dg launch --job``): the first gate runs with no
   champion, the second against the champion the first promoted; a week that promotes also
   renders the serving deployment of its champion;
4. predictions, drift and live performance for the days after;
5. a summary read back from MLflow and the lake.

Every step is a real Dagster run against the persistent instance in ``$DAGSTER_HOME``
(``$MLOPS_HOME/dagster``), so ``make dev`` shows all of it in the UI afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta

from mlops_assets.settings import ensure_dagster_home, get_settings

MODULE = "mlops_assets.definitions"


def _env() -> dict:
    s = get_settings()
    env = dict(os.environ)
    env["MLOPS_HOME"] = str(s.home)
    env["DAGSTER_HOME"] = str(s.dagster_home)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def _dagster(args: list[str], label: str, *, check: bool = True, tool: str = "dg") -> tuple[int, float]:
    """Run one Dagster CLI command (``dg launch ...``, which Dagster 1.13 recommends over
    ``dagster asset materialize`` / ``dagster job execute``); its output goes to a log file under
    $MLOPS_HOME/logs."""
    s = get_settings()
    log_dir = s.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{label}.log"
    exe = os.path.join(os.path.dirname(sys.executable), tool)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        rc = subprocess.run([exe, *args, "-m", MODULE], env=_env(), stdout=fh, stderr=subprocess.STDOUT).returncode
    dt = time.perf_counter() - t0
    print(f"  {label:<40} {'ok' if rc == 0 else f'FAILED (rc={rc})':<18} {dt:6.1f}s  log: {log_path}")
    if rc != 0 and check:
        tail = log_path.read_text().splitlines()[-30:]
        raise SystemExit(f"{label} failed; last lines of {log_path}:\n" + "\n".join(tail))
    return rc, dt


def plan(until_week: str, score_days: int) -> dict:
    s = get_settings()
    w2 = date.fromisoformat(until_week)
    if w2.weekday() != 0:
        raise SystemExit(f"--until-week {until_week} is not a Monday (weekly partitions start on Mondays)")
    w1 = w2 - timedelta(days=7)
    start = date.fromisoformat(s.start)
    score_first = w2 + timedelta(days=7)
    score_last = score_first + timedelta(days=score_days - 1)
    replay_until = score_last + timedelta(days=1)  # the outcomes of the last scored day land the day after
    if w1 - timedelta(days=7) < start:
        raise SystemExit(f"--until-week {until_week}: too early; the first week needs a week of history after {s.start}")
    return {
        "start": start.isoformat(), "replay_until": replay_until.isoformat(),
        "data_last": score_last.isoformat(), "weeks": [w1.isoformat(), w2.isoformat()],
        "score_first": score_first.isoformat(), "score_last": score_last.isoformat(),
    }


def run_demo(until_week: str, score_days: int, shuffle_second: bool = False) -> dict:
    from mlops_assets.lib.source import replay

    s = get_settings()
    ensure_dagster_home(s)
    p = plan(until_week, score_days)
    print(f"MLOPS_HOME={s.home}  DAGSTER_HOME={s.dagster_home}  MLflow={s.tracking_uri.split('?')[0]}")
    print(f"window {p['start']}..{p['data_last']}, training weeks {p['weeks']}, scoring "
          f"{p['score_first']}..{p['score_last']}, training window {s.train_weeks} weeks, {s.trials} trials/family")
    t0 = time.perf_counter()
    counts = replay(s.landing_uri, p["replay_until"], p["start"])
    print(f"  {'replay ' + p['start'] + '..' + p['replay_until']:<40} {'ok':<18} "
          f"{time.perf_counter() - t0:6.1f}s  ({counts['written']} files written, {counts['unchanged']} unchanged)")
    _dagster(["launch", "--assets", "group:ingestion or group:features",
              "--partition-range", f"{p['start']}...{p['data_last']}"], "ingestion+features (range backfill)")
    results = {}
    for i, week in enumerate(p["weeks"]):
        args = ["launch", "--job", "training_job", "--partition", week]
        if shuffle_second and i == 1:
            cfg = s.home / "logs" / "shuffle_labels.yaml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text("ops:\n  training_set:\n    config:\n      shuffle_labels: true\n")
            args += ["-c", str(cfg)]
        rc, _ = _dagster(args, f"training_job week {week}", check=False)
        results[week] = rc
    _dagster(["launch", "--assets", "flight_delay_predictions,feature_drift,prediction_performance",
              "--partition-range", f"{p['score_first']}...{p['score_last']}"], "scoring + monitoring (range)")
    _dagster(["launch", "--assets", "platform_health"], "platform_health")
    p["training_rc"] = results
    p["seconds"] = time.perf_counter() - t0
    return p


def summary(p: dict) -> str:
    from mlflow import MlflowClient

    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.drift import alarm_rows
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES
    from mlops_assets.lib.storage import Lake
    from mlops_assets.settings import MODEL_NAME

    s = get_settings()
    exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    client = MlflowClient()
    lines = ["", "=== summary ==="]
    trials = client.search_runs([exp], "tags.mlops_role = 'trial'", max_results=5000)
    by_family: dict[str, int] = {}
    for r in trials:
        by_family[r.data.tags.get("family", "?")] = by_family.get(r.data.tags.get("family", "?"), 0) + 1
    lines.append("trials per family, all weeks (MLflow nested runs): " + ", ".join(f"{k}={v}" for k, v in sorted(by_family.items())))
    lines.append("gate decisions:")
    versions = sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    for v in versions:
        t = v.tags
        lines.append(f"  v{v.version} week {t.get('week')} {t.get('family')}: holdout AUC {float(t.get('holdout_roc_auc', 'nan')):.4f}"
                     f" vs champion {t.get('champion_version_compared')} ({t.get('champion_holdout_roc_auc')}) -> {t.get('gate')}")
    champ = registry.alias_version(registry.CHAMPION)
    lines.append(f"champion: v{champ.version} (data window {champ.tags.get('data_window')}, "
                 f"Dagster run {champ.tags.get('dagster_run_id')})" if champ else "champion: none")
    lake = Lake(s.lake_uri)
    days = [d for d in lake.partitions("prediction_performance") if p["score_first"] <= d <= p["score_last"]]
    if days:
        perf = lake.read_many("prediction_performance", days)
        lines.append("live performance per day:")
        for _, r in perf.iterrows():
            if r.get("role", "champion") == "shadow":
                lines.append(f"  {r['date']} shadow v{r['model_version']}: AUC {r['roc_auc']:.4f}, vs the champion on the "
                             f"same flights {r['auc_delta']:+.4f} [{r['auc_delta_ci_low']:+.4f}, {r['auc_delta_ci_high']:+.4f}]")
                continue
            est = r.get("estimated_roc_auc", float("nan"))
            lines.append(f"  {r['date']} v{r['model_version']}: AUC {r['roc_auc']:.4f} (estimated before labels {est:.4f})  "
                         f"log loss {r['log_loss']:.4f}  predicted rate {r['predicted_rate']:.3f} vs actual "
                         f"{r['actual_rate']:.3f} (n={int(r['n'])})")
    drift_days = [d for d in lake.partitions("feature_drift") if p["score_first"] <= d <= p["score_last"]]
    if drift_days:
        drift = lake.read_many("feature_drift", drift_days)
        drift = drift[drift["feature"].isin(DRIFT_NUMERIC_FEATURES + CATEGORICAL_FEATURES)]
        drift = alarm_rows(drift)
        lines.append("drift alarms (PSI above each feature's threshold calibrated on the champion's training window; "
                     "7 days ending with the day):")
        for d, g in drift.groupby("date"):
            major = g.loc[g["alarm"], "feature"].tolist()
            lines.append(f"  {d}: max PSI {g['psi'].max():.3f}; in alarm: {', '.join(major) or 'none'}")
    lines.append(f"serving spec: {s.deploy_dir / 'serving.yaml'}")
    lines.append(f"platform health: {s.home / 'reports' / 'platform_health.md'} and platform_health.png "
                 "(in the UI: asset platform_health, metadata 'summary' and 'chart')")
    lines.append(f"total {p['seconds']:.0f}s.  See it in the UI: make dev  (then http://127.0.0.1:3000)")
    return "\n".join(lines)


def numbers(p: dict) -> dict:
    """The demo's results as numbers (``--json``): each registered version's gate record, the
    champion, and each scored day's live performance; what two runs of the demo on different
    services compare (tests/topology)."""
    from mlflow import MlflowClient

    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.storage import Lake
    from mlops_assets.settings import MODEL_NAME

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    versions = sorted(MlflowClient().search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    champ = registry.alias_version(registry.CHAMPION)
    lake = Lake(s.lake_uri)
    days = [d for d in lake.partitions("prediction_performance") if p["score_first"] <= d <= p["score_last"]]
    perf = lake.read_many("prediction_performance", days) if days else None
    keep = ("week", "family", "params", "holdout_roc_auc", "holdout_log_loss", "champion_version_compared",
            "champion_holdout_roc_auc", "gate", "recalibrated", "data_window")
    return {
        "versions": [{"version": str(v.version), **{k: v.tags.get(k) for k in keep}} for v in versions],
        "champion": str(champ.version) if champ else None,
        "live": [] if perf is None else [
            {k: (r[k].item() if hasattr(r[k], "item") else r[k]) for k in ("date", "model_version", "role", "roc_auc",
                                                                             "log_loss", "n") if k in r}
            for _, r in perf.iterrows()],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--until-week", default="2013-03-04", help="the second training week (a Monday)")
    ap.add_argument("--score-days", type=int, default=7, help="days scored and monitored after it")
    ap.add_argument("--shuffle-second", action="store_true",
                    help="drill: train the second week on shuffled labels (the gate must block it)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as numbers (versions, gate, live "
                                                  "performance) to PATH")
    args = ap.parse_args(argv)
    p = run_demo(args.until_week, args.score_days, args.shuffle_second)
    print(summary(p))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(numbers(p), fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
