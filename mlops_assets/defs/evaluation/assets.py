"""Evaluation: every candidate and the current champion scored on the same out-of-time holdout;
the best candidate registered as the ``challenger``; the gate as two blocking checks."""



import dagster as dg

from mlops_assets.defs.common import OWNERS, md_table, tracking_guard
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import weekly_partitions
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
from mlops_assets.lib.models import FAMILIES
from mlops_assets.settings import get_settings

# Read when the code location loads: the shape of the graph (partitions, the training window's
# mapping, the sweep's size) and the descriptions. Steps call get_settings() when they run.
_loaded = get_settings()
GATE_CHECKS = ("gate_quality_floor", "gate_beats_champion", "gate_calibration", "serving_infra_valid")
INFRA_ROWS = 200


@dg.asset(
    group_name="evaluation",
    partitions_def=weekly_partitions,
    ins={"training_set": dg.AssetIn("training_set"),
         **{f: dg.AssetIn(dg.AssetKey(["candidate_models", f])) for f in FAMILIES}},
    kinds={"mlflow"},
    owners=OWNERS,
    op_tags=cpu_step_tags("train"),
    check_specs=[
        dg.AssetCheckSpec("gate_quality_floor", asset="challenger", blocking=True,
                          description=f"holdout ROC AUC >= {_loaded.gate_min_auc} (MLOPS_GATE_MIN_AUC)"),
        dg.AssetCheckSpec("gate_beats_champion", asset="challenger", blocking=True,
                          description="lower 95% bound of the paired (DeLong) ROC AUC difference against the "
                                      f"champion on the same holdout rows >= {_loaded.gate_min_delta} "
                                      "(MLOPS_GATE_MIN_DELTA); passes with no champion"),
        dg.AssetCheckSpec("gate_calibration", asset="challenger", blocking=True,
                          description="holdout log loss <= champion's on the same rows + "
                                      f"{_loaded.gate_log_loss_tolerance} (MLOPS_GATE_LOG_LOSS_TOL); passes with no champion"),
        dg.AssetCheckSpec("serving_infra_valid", asset="challenger", blocking=True,
                          description="a challenger the gate passes is started in `mlops-serve` and sent "
                                      f"{INFRA_ROWS} holdout rows: answers equal to batch (1e-6), p99 of one-row "
                                      f"requests <= {_loaded.infra_p99_ms:.0f} ms (MLOPS_INFRA_P99_MS); not run (fails) "
                                      "when the gate blocks; MLOPS_INFRA_VALIDATION=off skips it (passes)"),
    ],
)
@tracking_guard
def challenger(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage,
               training_set: dict, **candidates):
    """The week's best candidate, registered as a version of the MLflow model ``flight_delay`` with
    alias ``challenger`` and tags naming its data window, Dagster run, code version, parameters and
    metrics.  The gate checks decide whether ``champion`` may move."""
    # the serving process for infra validation starts now, and imports while the week is evaluated
    server = _start_server(get_settings())
    try:
        value, metadata, checks = _challenger(context, mlflow, lake, training_set, candidates, server)
    finally:
        if server is not None:
            server.close()
    yield dg.Output(value, metadata=metadata)
    yield from checks


def _start_server(s):
    if not s.infra_validation:
        return None
    from mlops_assets.lib.infra_validation import ServingProcess

    return ServingProcess(tracking_uri=s.tracking_uri)


def _challenger(context, mlflow: MlflowTracking, lake: LakeStorage, training_set: dict, candidates: dict, server):
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.evaluation import Candidate, evaluate_week

    s = get_settings()
    week = context.partition_key
    ts = lake.lake().read("training_set", week)
    holdout = ts[ts["split"] == "holdout"]
    parent = mlflow.parent_run(context)
    champ = registry.alias_version(registry.CHAMPION)
    champion_version = str(champ.version) if champ is not None else None
    ev = evaluate_week(
        ts, {f: Candidate(f, c["model"], c["params"], c["valid_metrics"], c["trial"], c["mlflow_run_id"])
             for f, c in ((f, candidates[f]) for f in FAMILIES)},
        champion_version=champion_version,
        champion_predict=None if champ is None else
        (lambda X: registry.load_version(champion_version).predict(X)["delay_probability"].to_numpy()),
        min_auc=s.gate_min_auc, min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance,
        recalibration_alpha=s.recalibration_alpha)
    for fam in FAMILIES:  # each candidate's holdout scores on its own trial run
        tracking.log_batch(candidates[fam]["mlflow_run_id"], metrics={f"holdout_{k}": v for k, v in ev.holdout[fam].items()})
    best_fam, decision = ev.best.family, ev.decision
    model_uri = registry.log_model(ev.best.mlflow_run_id, ev.model, best_fam, holdout.head(5), ev.reference)
    tags = ev.tags(
        week=week, data_window=training_set["data_window"], holdout_window=training_set["holdout_window"],
        training_rows=len(ts), labels_shuffled=training_set.get("labels_shuffled", False),
        features_broken=training_set.get("features_broken", "") or "none", dagster_run_id=context.run_id,
        dagster_job=context.job_name, code_version=s.code_version)
    version = registry.register(model_uri, tags, alias=registry.CHALLENGER)
    infra = _infra_validation(context, registry, version, holdout, decision.promote, server)
    tracking.log_batch(parent, metrics={"challenger_holdout_roc_auc": ev.metrics["roc_auc"],
                                        **({"champion_holdout_roc_auc": ev.champion_auc} if ev.champion_auc is not None else {})},
                       tags={"challenger_version": version, "gate": tags["gate"]})
    tracking.end_run(parent)
    context.log.info(f"challenger v{version} ({best_fam}): {decision.describe()}")
    champion_auc, calibration, recal = ev.champion_auc, ev.calibration, ev.recalibration

    value = {
        "week": week, "version": version, "family": best_fam, "model_uri": model_uri,
        "holdout": ev.metrics, "champion_version": champion_version, "champion_auc": champion_auc,
        "gate": {"min_auc": s.gate_min_auc, "min_delta": s.gate_min_delta,
                 "log_loss_tolerance": s.gate_log_loss_tolerance},
        "decision": decision.as_dict(), "calibration_error": calibration["ece"], "infra": infra,
        "recalibration": {"applied": ev.recalibrated, **recal.as_dict()},
        "data_window": training_set["data_window"], "mlflow_run_id": ev.best.mlflow_run_id,
    }
    metadata = {
        "model_version": version,
        "family": best_fam,
        "holdout_roc_auc": dg.MetadataValue.float(ev.metrics["roc_auc"]),
        "holdout_log_loss": dg.MetadataValue.float(ev.metrics["log_loss"]),
        "champion_version": champion_version or "none",
        **({} if champion_auc is None else {"champion_holdout_roc_auc": dg.MetadataValue.float(champion_auc)}),
        "gate_decision": decision.describe(),
        **_delta_metadata(decision),
        "holdout_calibration_error": dg.MetadataValue.float(calibration["ece"]),
        "holdout_calibration_error_uncalibrated": dg.MetadataValue.float(ev.calibration_raw["ece"]),
        "recalibrated": ev.recalibrated,
        "valid_calibration_slope": dg.MetadataValue.float(recal.slope),
        "valid_calibration_intercept": dg.MetadataValue.float(recal.intercept),
        "valid_calibration_p_value": dg.MetadataValue.float(recal.p_value),
        "top_features": ", ".join(ev.top_features),
        "candidates": dg.MetadataValue.md(md_table(ev.table)),
        "data_window": training_set["data_window"],
    }
    return value, metadata, _gate_checks(decision, version, champion_version, champion_auc, calibration, infra)


def _gate_checks(decision, version: str, champion_version: str | None, champion_auc: float | None,
                 calibration: dict, infra: dict) -> list:
    """The four blocking checks on ``challenger``, from the gate's decision and infra validation."""
    checks = []
    # A blocked gate is a decision the platform takes every week, not an error: the checks fail
    # with WARN severity, so the run succeeds and `champion` (which re-applies the gate) simply
    # does not materialise. On 2013's data the best candidate misses the floor in hard weeks
    # (2013-09-16: 0.56, where the old model scored 0.55 too).
    checks.append(dg.AssetCheckResult(
        check_name="gate_quality_floor", passed=decision.passes_floor, severity=dg.AssetCheckSeverity.WARN,
        description=f"holdout AUC {decision.challenger_auc:.4f} vs floor {decision.min_auc:.2f}",
        metadata={"holdout_roc_auc": decision.challenger_auc, "min_auc": decision.min_auc, "model_version": version},
    ))
    checks.append(dg.AssetCheckResult(
        check_name="gate_beats_champion", passed=decision.beats_champion, severity=dg.AssetCheckSeverity.WARN,
        description=("no champion yet" if champion_auc is None else
                     f"challenger {decision.challenger_auc:.4f} vs champion v{champion_version} "
                     f"{champion_auc:.4f}: delta {decision.auc_delta:+.4f}, 95% CI "
                     f"[{decision.auc_delta_ci_low:+.4f}, {decision.auc_delta_ci_high:+.4f}], "
                     f"lower bound >= {decision.min_delta:+.4f}"),
        metadata={"holdout_roc_auc": decision.challenger_auc, "min_delta": decision.min_delta,
                  "champion_version": champion_version or "none", **_delta_metadata(decision),
                  **({} if champion_auc is None else {"champion_holdout_roc_auc": champion_auc})},
    ))
    checks.append(dg.AssetCheckResult(
        check_name="gate_calibration", passed=decision.calibrated, severity=dg.AssetCheckSeverity.WARN,
        description=("no champion yet" if champion_auc is None else
                     f"holdout log loss {decision.challenger_log_loss:.4f} vs champion v{champion_version} "
                     f"{decision.champion_log_loss:.4f} + {decision.log_loss_tolerance}"),
        metadata={"holdout_log_loss": decision.challenger_log_loss, "log_loss_tolerance": decision.log_loss_tolerance,
                  "holdout_calibration_error": calibration["ece"],
                  **({} if decision.champion_log_loss is None else {"champion_holdout_log_loss": decision.champion_log_loss})},
    ))
    checks.append(dg.AssetCheckResult(
        check_name="serving_infra_valid", passed=bool(infra["passed"]), severity=dg.AssetCheckSeverity.WARN,
        description=infra["reason"],
        metadata={"ran": bool(infra["ran"]),
                  **{k: float(infra[k]) for k in ("startup_s", "max_abs_diff", "p99_ms", "p99_budget_ms")
                     if k in infra and infra[k] == infra[k]}},
    ))
    return checks


def _infra_validation(context, registry, version: str, holdout, gate_passed: bool, server=None) -> dict:
    """Start the registered version in the real serving process and check it against its batch
    predictions (``lib.infra_validation``), when the gate would promote it."""
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.lib.infra_validation import validate_version

    s = get_settings()
    if not s.infra_validation:
        return {"passed": True, "ran": False, "reason": "MLOPS_INFRA_VALIDATION=off"}
    if not gate_passed:
        return {"passed": False, "ran": False, "reason": f"not run: the gate blocks v{version}"}
    res = validate_version(version, holdout[FEATURE_COLUMNS], rows=INFRA_ROWS, tracking_uri=s.tracking_uri,
                           p99_budget_ms=s.infra_p99_ms, server=server)
    context.log.info(f"infra validation of v{version}: {'passed' if res.passed else 'FAILED'}: {res.reason}")
    if not res.passed:
        registry.set_version_tags(version, {"gate": "blocked", "infra_validation": res.reason[:5000]})
    return {**res.as_dict(), "ran": True}


def _delta_metadata(decision) -> dict:
    """The paired AUC difference as numbers the UI plots across weeks (absent with no champion)."""
    if not decision.has_champion or decision.auc_delta_ci_low is None:
        return {}
    return {"auc_delta": dg.MetadataValue.float(float(decision.auc_delta)),
            "auc_delta_ci_low": dg.MetadataValue.float(float(decision.auc_delta_ci_low)),
            "auc_delta_ci_high": dg.MetadataValue.float(float(decision.auc_delta_ci_high))}
