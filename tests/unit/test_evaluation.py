"""The week's evaluation runs without Dagster or MLflow: candidates and a champion on one holdout,
the best by holdout AUC, the gate's decision on the same rows, what the version will carry."""

import pandas as pd
import pytest

from mlops_assets.lib import features
from mlops_assets.lib.evaluation import Candidate, evaluate_week
from mlops_assets.lib.features import LABEL
from mlops_assets.lib.metrics import GateDecision
from mlops_assets.lib.training import make_training_set, predict_proba, train_trial

GATE = {"min_auc": 0.6, "min_delta": 0.0, "log_loss_tolerance": 0.01, "recalibration_alpha": 0.01}


@pytest.fixture(scope="module")
def week():
    days = [str(d.date()) for d in pd.date_range("2013-03-04", periods=21)]
    ex = features.examples_from_source(days)
    ts = make_training_set(ex[ex[LABEL].notna()], holdout_days=5, valid_days=5)
    cands = {}
    for fam, params in (("hist_gradient_boosting", {"learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0}),
                        ("logistic_regression", {"C": 1.0})):
        r = train_trial(fam, params, ts)
        cands[fam] = Candidate(fam, r.model, r.params, r.valid_metrics, trial=0, mlflow_run_id=f"run-{fam}")
    shuffled = make_training_set(ex[ex[LABEL].notna()], holdout_days=5, valid_days=5, shuffle_labels_seed=1)
    weak = train_trial("logistic_regression", {"C": 1.0}, shuffled).model
    return ts, cands, weak


def test_the_best_candidate_is_gated_against_the_champion_on_the_same_rows(week):
    ts, cands, weak = week
    ev = evaluate_week(ts, cands, champion_version="7", champion_predict=lambda X: weak.predict_proba(X)[:, 1], **GATE)
    assert ev.best.family == max(ev.holdout, key=lambda f: ev.holdout[f]["roc_auc"])
    ho = ts[ts["split"] == "holdout"]
    expected = GateDecision.compare(ho[LABEL].to_numpy(), predict_proba(ev.model, ho), predict_proba(weak, ho),
                                    min_auc=0.6, min_delta=0.0, log_loss_tolerance=0.01)
    assert ev.decision == expected and ev.decision.promote  # clearly better than a model of shuffled labels
    assert [r["model"] for r in ev.table][-1] == "champion v7"
    tags = ev.tags(week="2013-03-11", dagster_run_id="r1")
    assert tags["champion_version_compared"] == "7" and tags["gate"] == "passed" and tags["week"] == "2013-03-11"
    assert float(tags["holdout_roc_auc"]) == pytest.approx(ev.metrics["roc_auc"], abs=1e-6)
    assert ev.reference["numeric"] and ev.reference["importance"] and "estimate_bias" in ev.reference


def test_with_no_champion_the_floor_alone_decides(week):
    ts, cands, _ = week
    ev = evaluate_week(ts, cands, **GATE)
    assert ev.champion_auc is None and ev.decision.has_champion is False
    assert ev.decision.promote == (ev.metrics["roc_auc"] >= 0.6)


def test_permutation_importance_on_samples_agrees_with_all_rows_within_its_stated_error(week):
    """The week's importances come from 4 repeats of 1,500 sampled holdout rows, with a standard
    error; on the whole holdout (3 repeats of every row) they agree within that error."""
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES
    from mlops_assets.lib.training import feature_importance, feature_importance_with_error

    ts, cands, _ = week
    model = cands["hist_gradient_boosting"].model
    ho = ts[ts["split"] == "holdout"]
    assert len(ho) > 3000  # the sample is a real subset
    cols = DRIFT_NUMERIC_FEATURES + CATEGORICAL_FEATURES
    mean, se = feature_importance_with_error(model, ho, cols)
    full = feature_importance(model, ho, cols, repeats=3, max_rows=None)
    assert all(s >= 0 for s in se.values())  # every estimate carries its error (0: shuffling it never moves the AUC)
    assert all(se[f] > 0 for f in cols if mean[f] > 0)
    top = max(full, key=full.get)
    assert full[top] > 0.01 and mean[top] > 3 * se[top]  # the strongest feature stands out of its noise
    off = {f: (mean[f], full[f], se[f]) for f in cols if abs(mean[f] - full[f]) > 4 * se[f] + 0.002}
    assert not off, off  # floored at 0 on both sides, hence the small absolute slack
    ev = evaluate_week(ts, cands, **GATE)
    assert set(ev.reference["importance_se"]) == set(ev.reference["importance"])
    assert ev.reference["importance_sample"] == {"rows": 1500, "repeats": 4, "of_rows": len(ho)}
