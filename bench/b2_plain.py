"""B2's baseline: the weekly training cycle as plain Python in one process, making exactly the
``lib/`` calls that ``training_job``'s steps make, with the same arguments, in the job's order, so
that the ratio measures orchestration alone (Dagster's runs, steps, processes, IO managers and
event log) and nothing the job does that this would not.  No Dagster import.

Per step of ``training_job`` (the asset or op that makes the calls):

* ``training_set``: ``training_window_days``, ``Lake.has`` (holdout days, then the window),
  ``measure``, ``Lake.read_many_fp``, ``make_training_set``, ``Lake.write``, ``digest``;
* ``plan_<family>_trials``: ``sweep(family, trials, seed=0)``;
* ``train_<family>_trial`` (each trial): ``Lake.read("training_set")``, ``tracking.configure``,
  ``tracking.parent_run_id``, ``tracking.start_trial_run``, ``measure`` + ``tracking.system_metrics``
  around ``train_trial``, ``tracking.log_batch(**TrialResult.log_fields)``, ``tracking.end_run``;
* ``pick_best_<family>``: the best trial by valid AUC (then the lowest trial number);
* ``challenger``: ``ServingProcess`` (started ahead), ``Lake.read``, ``tracking.parent_run_id``,
  ``registry.alias_version(champion)``, ``evaluate_week`` (with the champion's
  ``registry.load_version(...).predict`` when there is one), ``tracking.log_batch`` per family,
  ``registry.log_model``, ``WeekEvaluation.tags``, ``registry.register``,
  ``infra_validation.validate_version`` when the gate passes, ``tracking.log_batch``,
  ``tracking.end_run``;
* ``champion``: ``gate_from``, ``registry.promote`` (with the same re-gate) when the gate passes;
* ``model_deployment``: ``registry.alias_version``, ``registry.smoke_test``, ``serving_manifests``,
  ``to_yaml``, ``Location.write_bytes``, ``registry.version_uri``.

The job's executor runs the trials one after another in the run's process on 2 CPUs (the
default ``MLOPS_EXECUTOR=auto``), in parallel step processes from 4; this runs them one after
another in one process, as a data scientist's script would.
"""

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--week", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.evaluation import Candidate, evaluate_week
    from mlops_assets.lib.features import FEATURE_COLUMNS, feature_matrix
    from mlops_assets.lib.infra_validation import ServingProcess, validate_version
    from mlops_assets.lib.manifests import serving_manifests, to_yaml
    from mlops_assets.lib.metrics import GateDecision, gate_from
    from mlops_assets.lib.models import FAMILIES, sweep
    from mlops_assets.lib.storage import Lake, Location, digest
    from mlops_assets.lib.training import make_training_set, train_trial, training_window_days
    from mlops_assets.lib.usage import measure
    from mlops_assets.settings import get_settings

    s = get_settings()
    week, run_id = args.week, f"plain-{uuid.uuid4()}"
    lake = Lake(s.lake_uri)

    # training_set
    days = training_window_days(week, s.train_weeks, s.start)
    holdout_days = days[-7:]
    assert all(lake.has("training_examples", d) for d in holdout_days)
    present = [d for d in days if lake.has("training_examples", d)]
    with measure():
        examples, shas = lake.read_many_fp("training_examples", present)
        ts = make_training_set(examples)
        lake.write("training_set", week, ts)
    digest(*(f"{d}:{shas[d]}" for d in present), s.code_version)
    ts_info = {"week": week, "data_window": f"{present[0]}..{present[-1]}",
               "holdout_window": f"{holdout_days[0]}..{holdout_days[-1]}"}

    # candidate_models/<family>: plan, trials, pick best
    best = {}
    for fam in FAMILIES:
        trials = []
        for i, params in enumerate(sweep(fam, s.trials, seed=0)):
            t_ts = lake.read("training_set", week)
            exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
            parent = tracking.parent_run_id(exp, run_id, job_name="training_job", tags={"dagster_partition": week})
            rid = tracking.start_trial_run(exp, parent, f"{fam}-{week}-t{i}", {
                "family": fam, "week": week, "dagster_run_id": run_id, "dagster_step": f"train_{fam}_trial[trial_{i}]"})
            with measure() as usage, tracking.system_metrics(rid):
                r = train_trial(fam, params, t_ts, seed=i)
            tracking.log_batch(rid, **r.log_fields(usage.metrics))
            tracking.end_run(rid)
            trials.append({"trial": i, "result": r, "mlflow_run_id": rid})
        b = max(trials, key=lambda t: (t["result"].valid_metrics["roc_auc"], -t["trial"]))
        best[fam] = Candidate(fam, b["result"].model, b["result"].params, b["result"].valid_metrics, b["trial"],
                              b["mlflow_run_id"])

    # challenger (+ the gate's checks)
    server = ServingProcess(tracking_uri=s.tracking_uri) if s.infra_validation else None
    try:
        ts = lake.read("training_set", week)
        holdout = ts[ts["split"] == "holdout"]
        exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        parent = tracking.parent_run_id(exp, run_id, job_name="training_job", tags={"dagster_partition": week})
        champ = registry.alias_version(registry.CHAMPION)
        champion_version = str(champ.version) if champ is not None else None
        ev = evaluate_week(
            ts, best, champion_version=champion_version,
            champion_predict=None if champ is None else
            (lambda X: registry.load_version(champion_version).predict(X)["delay_probability"].to_numpy()),
            min_auc=s.gate_min_auc, min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance,
            recalibration_alpha=s.recalibration_alpha)
        for fam in FAMILIES:
            tracking.log_batch(best[fam].mlflow_run_id, metrics={f"holdout_{k}": v for k, v in ev.holdout[fam].items()})
        model_uri = registry.log_model(ev.best.mlflow_run_id, ev.model, ev.best.family, holdout.head(5), ev.reference)
        tags = ev.tags(week=week, data_window=ts_info["data_window"], holdout_window=ts_info["holdout_window"],
                       training_rows=len(ts), labels_shuffled=False, features_broken="none", dagster_run_id=run_id,
                       dagster_job="training_job", code_version=s.code_version)
        version = registry.register(model_uri, tags, alias=registry.CHALLENGER)
        infra = {"passed": True}
        if s.infra_validation and ev.decision.promote:
            infra = validate_version(version, holdout[FEATURE_COLUMNS], rows=200, tracking_uri=s.tracking_uri,
                                     p99_budget_ms=s.infra_p99_ms, server=server).as_dict()
        tracking.log_batch(parent, metrics={"challenger_holdout_roc_auc": ev.metrics["roc_auc"],
                                            **({"champion_holdout_roc_auc": ev.champion_auc}
                                               if ev.champion_auc is not None else {})},
                           tags={"challenger_version": version, "gate": tags["gate"]})
        tracking.end_run(parent)
    finally:
        if server is not None:
            server.close()
    value = {"version": version, "decision": ev.decision.as_dict(), "champion_version": champion_version,
             "infra": infra}

    # champion
    promoted = None
    decision = gate_from(value)
    if decision.promote and infra["passed"]:
        def regate(current):
            X = feature_matrix(holdout)
            p = registry.load_version(version).predict(X)["delay_probability"].to_numpy()
            p_cur = registry.load_version(current).predict(X)["delay_probability"].to_numpy() if current else None
            d = GateDecision.compare(holdout["label"].to_numpy(), p, p_cur, min_auc=s.gate_min_auc,
                                     min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance)
            return d.promote, d.describe()

        promoted = registry.promote(version, expected_current=champion_version,
                                    tags={"promoted_by_dagster_run": run_id}, regate=regate)

    # model_deployment (runs when champion materialised)
    if promoted is not None:
        champ = registry.alias_version(registry.CHAMPION)
        registry.smoke_test(str(champ.version))
        docs = serving_manifests(str(champ.version), image=s.k8s_image, namespace=s.k8s_namespace,
                                 max_rows=s.serving_max_rows, max_bytes=s.serving_max_bytes,
                                 payload_sample=s.payload_sample, env_secrets=s.k8s_env_secrets)
        Location(s.deploy_dir).write_bytes("serving.yaml", to_yaml(docs).encode())
        registry.version_uri(str(champ.version))
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "version": version,
                                  "promoted": promoted is not None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
