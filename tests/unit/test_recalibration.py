"""Calibration is measured, and a model that needs it is recalibrated, in batch and in serving."""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from mlops_assets.lib import features
from mlops_assets.lib.calibration import Recalibrated, calibration_test, recalibrate_if_needed
from mlops_assets.lib.features import LABEL
from mlops_assets.lib.metrics import classification_metrics
from mlops_assets.lib.serving_model import FlightDelayModel
from mlops_assets.lib.training import feature_importance, make_training_set, predict_proba, train_trial


def _sample(n, seed, slope=1.0, intercept=0.0):
    """Outcomes drawn from true probabilities; the 'model' reports a distorted version of them."""
    rng = np.random.default_rng(seed)
    true = expit(rng.normal(-1.2, 1.0, n))
    y = (rng.random(n) < true).astype(int)
    reported = expit((logit(true) - intercept) / slope)  # so that the true map is (intercept, slope)
    return y, reported


def test_a_calibrated_model_is_left_alone_at_the_stated_rate():
    rejections = sum(calibration_test(*_sample(4000, seed)).needs_recalibration(0.01) for seed in range(200))
    # the test's size is 1%: 200 draws reject ~2 times; 8 or more would be p < 0.001
    assert rejections <= 7


def test_an_overconfident_model_is_found_and_its_map_recovered():
    y, p = _sample(6000, 1, slope=0.5, intercept=-0.3)
    t = calibration_test(y, p)
    assert t.needs_recalibration(0.01)
    assert t.slope == pytest.approx(0.5, abs=0.06)
    assert t.intercept == pytest.approx(-0.3, abs=0.1)
    # on fresh rows from the same distortion, the fitted map lowers the log loss and keeps the AUC
    y2, p2 = _sample(6000, 2, slope=0.5, intercept=-0.3)
    from mlops_assets.lib.calibration import apply_map

    q2 = apply_map(p2, t.intercept, t.slope)
    raw, fixed = classification_metrics(y2, p2), classification_metrics(y2, q2)
    assert fixed["log_loss"] < raw["log_loss"] - 0.01
    assert fixed["roc_auc"] == pytest.approx(raw["roc_auc"], abs=1e-12)


def test_a_fit_that_would_invert_the_model_only_shifts_it():
    """Rows on which the model ranks backwards (a tiny or odd valid split) never yield a map that
    flattens or inverts the model: the slope stays 1, only calibration in the large is fitted."""
    y, p = _sample(3000, 4)
    t = calibration_test(1 - y, p)  # outcomes that run against the model's ranking
    assert t.slope == 1.0 and t.intercept != 0.0
    from mlops_assets.lib.calibration import apply_map

    q = apply_map(p, t.intercept, t.slope)
    assert np.all(np.diff(q[np.argsort(p)]) >= 0)  # the order of the model's scores is kept
    assert abs(q.mean() - (1 - y).mean()) < 0.01  # and the rate is the realised one


@pytest.fixture(scope="module")
def real_model():
    """A HistGradientBoosting model of three real weeks of 2013 (its valid week is out of time)."""
    days = [str(d.date()) for d in pd.date_range("2013-03-04", periods=21)]
    ex = features.examples_from_source(days)
    ts = make_training_set(ex[ex[LABEL].notna()], holdout_days=3, valid_days=5)
    model = train_trial("hist_gradient_boosting", {"learning_rate": 0.1, "max_leaf_nodes": 31,
                                                   "l2_regularization": 0.0}, ts).model
    return model, ts


def test_a_real_model_recalibrated_scores_the_same_in_batch_serving_and_after_pickling(real_model):
    model, ts = real_model
    valid, holdout = ts[ts["split"] == "valid"], ts[ts["split"] == "holdout"]
    wrapped, test = recalibrate_if_needed(model, valid[LABEL], predict_proba(model, valid), alpha=1.0)
    assert isinstance(wrapped, Recalibrated) and wrapped.base is model
    direct = predict_proba(wrapped, holdout)
    assert not np.allclose(direct, predict_proba(model, holdout))  # the map does something
    # the registered model (FlightDelayModel) scores through the array scorer of the base pipeline
    # and then the map: the same numbers, also after a pickle round trip (as MLflow stores it)
    served = pickle.loads(pickle.dumps(FlightDelayModel(wrapped)))
    assert served._scorer() is not None
    out = served.predict(None, holdout[features.FEATURE_COLUMNS])["delay_probability"].to_numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-9)
    # a monotone map: ranking (AUC) unchanged; permutation importance works on the wrapper
    assert classification_metrics(holdout[LABEL], direct)["roc_auc"] == pytest.approx(
        classification_metrics(holdout[LABEL], predict_proba(model, holdout))["roc_auc"], abs=1e-12)
    imp = feature_importance(wrapped, holdout, ["temp", "carrier"], repeats=1)
    assert set(imp) == {"temp", "carrier"} and all(v >= 0 for v in imp.values())


def test_recalibration_off_returns_the_model_itself(real_model):
    model, ts = real_model
    valid = ts[ts["split"] == "valid"]
    same, test = recalibrate_if_needed(model, valid[LABEL], predict_proba(model, valid), alpha=0.0)
    assert same is model
    assert 0.0 <= test.p_value <= 1.0 and test.rows == len(valid)
