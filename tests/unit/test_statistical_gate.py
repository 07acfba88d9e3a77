"""The statistical gate: DeLong's paired AUC difference, its error rates, the calibration guard."""

import numpy as np
import pytest

from mlops_assets.lib.metrics import GateDecision, calibration_table, paired_auc_difference


def _week(rng, n=6000, rate=0.2):
    """One week's holdout: labels and a latent signal both models see."""
    y = rng.random(n) < rate
    return y, y * 1.0 + rng.normal(0, 1.4, n)


def test_delong_matches_sklearn_and_a_paired_bootstrap():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y, s = _week(rng)
    a, b = s + rng.normal(0, 0.6, len(y)), s + rng.normal(0, 0.6, len(y))
    d = paired_auc_difference(y, a, b)
    assert d["auc_challenger"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert d["auc_champion"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert d["auc_delta_se"] == pytest.approx(np.std(boot), rel=0.2)
    # pairing matters: the difference's error is well below what two independent AUCs would give
    assert d["auc_delta_se"] < 0.6 * np.hypot(0.0085, 0.0085)


def _promotions(rng, challenger_noise: float, n_resamples=200, champion_noise=0.8):
    """Share of 200 fresh holdout weeks on which the gate promotes; each model sees the signal
    plus its own noise (equal noise: equally good models)."""
    promoted, deltas = 0, []
    for _ in range(n_resamples):
        y, s = _week(rng)
        champion = s + rng.normal(0, champion_noise, len(y))
        challenger = s + rng.normal(0, challenger_noise, len(y))
        to_p = lambda x: 1 / (1 + np.exp(-(x - 1.5)))  # noqa: E731
        d = GateDecision.compare(y, to_p(challenger), to_p(champion), min_auc=0.55, min_delta=0.0,
                                 log_loss_tolerance=1.0)
        promoted += d.promote
        deltas.append(d.auc_delta)
    return promoted / n_resamples, float(np.mean(deltas))


def test_two_equal_models_replace_each_other_at_most_5_percent_of_the_time():
    rate, delta = _promotions(np.random.default_rng(1), challenger_noise=0.8)
    assert rate <= 0.05 and abs(delta) < 0.002
    # the point-estimate gate it replaces swaps them about half the time
    rng = np.random.default_rng(1)
    swaps = 0
    for _ in range(200):
        y, s = _week(rng)
        d = GateDecision.compare(y, s + rng.normal(0, 0.8, len(y)), s + rng.normal(0, 0.8, len(y)),
                                 min_auc=0.55, min_delta=0.0)
        swaps += GateDecision(d.challenger_auc, d.champion_auc, 0.55, 0.0).promote
    assert 0.35 < swaps / 200 < 0.65


def test_a_clearly_better_model_is_promoted_at_least_95_percent_of_the_time():
    # about 0.03 of AUC better: three times a single week's AUC standard error
    rate, delta = _promotions(np.random.default_rng(2), challenger_noise=0.0)
    assert 0.02 < delta < 0.04
    assert rate >= 0.95


def _platt(y, score):
    """Calibrated probabilities of a score (logistic regression of the label on it)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(score).reshape(-1, 1)
    return LogisticRegression().fit(x, y).predict_proba(x)[:, 1]


def test_the_calibration_guard_stops_a_better_ranker_with_broken_probabilities():
    rng = np.random.default_rng(3)
    y, s = _week(rng)
    champion = _platt(y, s + rng.normal(0, 1.0, len(y)))
    calibrated = _platt(y, s)
    fine = GateDecision.compare(y, calibrated, champion, min_auc=0.55, min_delta=0.0)
    assert fine.beats_champion and fine.calibrated and fine.promote
    logit = np.log(calibrated / (1 - calibrated))
    broken = 1 / (1 + np.exp(-(4 * logit + 3)))  # the same ranking, overconfident and shifted up
    d = GateDecision.compare(y, broken, champion, min_auc=0.55, min_delta=0.0)
    assert d.challenger_auc == pytest.approx(fine.challenger_auc)
    assert d.beats_champion and d.passes_floor
    assert not d.calibrated and not d.promote
    assert "log loss" in d.describe() and d.describe().startswith("BLOCK")
    assert calibration_table(y, broken)["ece"] > 5 * calibration_table(y, calibrated)["ece"]


def test_no_champion_the_floor_alone_decides():
    rng = np.random.default_rng(4)
    y, s = _week(rng)
    p = 1 / (1 + np.exp(-(s - 1.5)))
    d = GateDecision.compare(y, p, None, min_auc=0.55, min_delta=0.0)
    assert d.promote and d.auc_delta is None and d.describe().endswith("no champion")
    assert not GateDecision.compare(y, p, None, min_auc=0.99, min_delta=0.0).promote
    # rebuilt from what the challenger asset stores, the decision is the same
    again = GateDecision(**GateDecision.compare(y, p, 1 - p, min_auc=0.55, min_delta=0.0).as_dict())
    assert again.promote and again.auc_delta_ci_low > 0
