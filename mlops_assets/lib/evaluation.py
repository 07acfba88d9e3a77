"""The week's evaluation: every candidate and the champion on the same holdout, the best one
(recalibrated when it needs it), the gate's decision, and what the registered version carries (its
drift reference, its tags).  No Dagster and no MLflow I/O here: a data scientist runs it on a
training set and a few fitted models (the ``challenger`` asset does the logging, registering and
infra validation around it).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib.metrics import GateDecision


@dataclasses.dataclass
class Candidate:
    """A family's best trial: its fitted model, its hyperparameters and its valid metrics."""

    family: str
    model: Any
    params: dict
    valid_metrics: dict
    trial: int = 0
    mlflow_run_id: str = ""


@dataclasses.dataclass
class WeekEvaluation:
    holdout: dict[str, dict]  # family -> holdout metrics (the best one after recalibration)
    table: list[dict]  # one row per candidate and the champion, for the UI
    best: Candidate
    model: Any  # the best candidate's model, recalibrated when its valid week asked for it
    recalibrated: bool
    recalibration: Any  # lib.calibration.CalibrationTest on the valid week
    decision: GateDecision
    calibration: dict  # holdout calibration table of ``model``
    calibration_raw: dict  # ... of the model before recalibration
    importance: dict[str, float]
    reference: dict  # the drift reference, with the estimate's bias
    champion_version: str | None = None
    champion_auc: float | None = None

    @property
    def metrics(self) -> dict:
        return self.holdout[self.best.family]

    @property
    def top_features(self) -> list[str]:
        return sorted(self.importance, key=self.importance.get, reverse=True)[:5]

    def tags(self, **lineage) -> dict[str, Any]:
        """The tags of the registered version: lineage (week, data window, Dagster run, code
        version... passed in) and what this evaluation decided."""
        m, d = self.metrics, self.decision
        return {
            **lineage,
            "family": self.best.family,
            "params": json.dumps(self.best.params, sort_keys=True),
            "trial": self.best.trial,
            "mlflow_run_id": self.best.mlflow_run_id,
            "valid_roc_auc": f"{self.best.valid_metrics['roc_auc']:.6f}",
            "holdout_roc_auc": f"{m['roc_auc']:.6f}",
            "holdout_log_loss": f"{m['log_loss']:.6f}",
            "holdout_brier": f"{m['brier']:.6f}",
            "champion_version_compared": self.champion_version or "none",
            "champion_holdout_roc_auc": "none" if self.champion_auc is None else f"{self.champion_auc:.6f}",
            "gate": "passed" if d.promote else "blocked",
            "gate_floor": "passed" if d.passes_floor else "failed",
            "gate_decision": d.describe(),
            "holdout_calibration_error": f"{self.calibration['ece']:.6f}",
            "recalibrated": "yes" if self.recalibrated else "no",
            "valid_calibration_intercept": f"{self.recalibration.intercept:.6f}",
            "valid_calibration_slope": f"{self.recalibration.slope:.6f}",
            "valid_calibration_p_value": f"{self.recalibration.p_value:.3g}",
            "estimate_auc_bias": f"{self.reference['estimate_bias']['roc_auc_bias']:.6f}",
        }


def evaluate_week(training_set: pd.DataFrame, candidates: dict[str, Candidate], *,
                  champion_version: str | None = None, champion_predict=None,
                  min_auc: float, min_delta: float, log_loss_tolerance: float,
                  recalibration_alpha: float) -> WeekEvaluation:
    """Score every candidate on the holdout, take the best (by holdout ROC AUC), recalibrate it
    when Cox's test on the valid week rejects at ``recalibration_alpha``, gate it against the
    champion on the same holdout rows (``champion_predict``: feature rows -> probabilities, None
    with no champion), and build what its version carries.  ``candidates``: family -> Candidate."""
    from mlops_assets.lib.calibration import recalibrate_if_needed
    from mlops_assets.lib.drift import build_reference
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES, LABEL, feature_matrix
    from mlops_assets.lib.metrics import calibration_table, classification_metrics, estimate_bias
    from mlops_assets.lib.training import (IMPORTANCE_REPEATS, IMPORTANCE_ROWS, feature_importance_with_error,
                                            predict_proba, score_split)

    holdout = training_set[training_set["split"] == "holdout"]
    valid = training_set[training_set["split"] == "valid"]
    y = holdout[LABEL].to_numpy()
    scored, table = {}, []
    for fam, cand in candidates.items():
        m = score_split(cand.model, training_set, "holdout")
        scored[fam] = m
        table.append({"model": f"candidate {fam}", "params": json.dumps(cand.params),
                      "valid_auc": cand.valid_metrics["roc_auc"], "holdout_auc": m["roc_auc"],
                      "holdout_log_loss": m["log_loss"], "holdout_brier": m["brier"]})
    p_champion = champion_auc = None
    if champion_predict is not None:
        p_champion = np.asarray(champion_predict(feature_matrix(holdout)), dtype=float)
        cm = classification_metrics(y, p_champion)
        champion_auc = cm["roc_auc"]
        table.append({"model": f"champion v{champion_version}", "params": "", "valid_auc": float("nan"),
                      "holdout_auc": cm["roc_auc"], "holdout_log_loss": cm["log_loss"], "holdout_brier": cm["brier"]})

    best = candidates[max(candidates, key=lambda f: scored[f]["roc_auc"])]
    # Calibrated probabilities (every estimate before labels and the calibration guard rest on
    # them): Cox's test on the valid week; when it rejects, the fitted map goes with the model
    # (monotone: the AUC and the family choice stand). lib/calibration.py.
    model, recal = recalibrate_if_needed(best.model, valid[LABEL].to_numpy(), predict_proba(best.model, valid),
                                         alpha=recalibration_alpha)
    recalibrated = model is not best.model
    p_raw = predict_proba(best.model, holdout)
    p_best = predict_proba(model, holdout) if recalibrated else p_raw
    if recalibrated:
        scored[best.family] = classification_metrics(y, p_best)
    decision = GateDecision.compare(y, p_best, p_champion, min_auc=min_auc, min_delta=min_delta,
                                    log_loss_tolerance=log_loss_tolerance)
    calibration = calibration_table(y, p_best)
    calibration_raw = calibration_table(y, p_raw) if recalibrated else calibration
    train_rows = training_set[training_set["split"] == "train"]
    # the drift reference: the training rows' features and the model's output on them, each with
    # its alarm threshold from the window's own day-to-day variability, and each feature's
    # importance to this model (permutation on samples of the holdout, with its standard error)
    importance, importance_se = feature_importance_with_error(model, holdout, DRIFT_NUMERIC_FEATURES + CATEGORICAL_FEATURES)
    reference = build_reference(train_rows, DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES,
                                output=predict_proba(model, train_rows), importance=importance)
    reference["importance_se"] = importance_se
    reference["importance_sample"] = {"rows": min(IMPORTANCE_ROWS, len(holdout)), "repeats": IMPORTANCE_REPEATS,
                                      "of_rows": len(holdout)}
    # what the model's own probabilities promise a day against what its holdout days delivered:
    # the correction of every performance estimate made before labels land
    reference["estimate_bias"] = estimate_bias(holdout["date"], y, p_best)
    return WeekEvaluation(holdout=scored, table=table, best=best, model=model, recalibrated=recalibrated,
                          recalibration=recal, decision=decision, calibration=calibration,
                          calibration_raw=calibration_raw, importance=importance, reference=reference,
                          champion_version=champion_version, champion_auc=champion_auc)
