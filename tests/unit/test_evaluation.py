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
