"""Are a model's probabilities calibrated, and recalibration when they are not (no Dagster here).

The test is Cox's (1958): regress the outcome on the logit of the predicted probability,
``logit P(y=1) = a + b * logit(p)``.  A calibrated model has ``a = 0`` and ``b = 1``; the
likelihood-ratio statistic of that hypothesis against the fitted ``(a, b)`` is chi-squared with
2 degrees of freedom.  When the test rejects at ``alpha``, the fitted ``(a, b)`` *is* the
recalibration (Platt scaling on the model's own logit): a monotone map, so the ranking, and with it
the ROC AUC, is unchanged.  A slope below ``MIN_SLOPE`` (the rows show no ranking: a day of valid
data can) is never used: only the intercept is fitted then, with the slope fixed at 1.

The platform measures it on the ``valid`` split (the week before the holdout, which the gate keeps
for itself) and keeps the map only when it is needed; ``bench/calibration.py`` measures what that
does to the holdout and to the weeks the model then serves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EPS = 1e-7
MIN_SLOPE = 0.05  # a fitted slope below this is not used (it would flatten or invert the model)


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _log_likelihood(y: np.ndarray, z: np.ndarray) -> float:
    # sum of y*log(s(z)) + (1-y)*log(1-s(z)), stably
    return float(-np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))


@dataclasses.dataclass(frozen=True)
class CalibrationTest:
    intercept: float  # a: calibration in the large (0 when calibrated)
    slope: float      # b: 1 when calibrated; < 1 over-confident, > 1 under-confident
    statistic: float  # likelihood ratio of (a, b) = (0, 1), chi-squared with 2 df
    p_value: float
    rows: int

    def needs_recalibration(self, alpha: float) -> bool:
        return bool(np.isfinite(self.p_value) and self.p_value < alpha)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def calibration_test(y_true, p) -> CalibrationTest:
    """Cox's calibration intercept and slope of ``p`` against ``y_true``, and the likelihood-ratio
    test that they are (0, 1)."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y_true, dtype=float)
    z = _logit(p)
    if len(y) < 10 or not 0 < y.sum() < len(y):
        return CalibrationTest(0.0, 1.0, float("nan"), float("nan"), int(len(y)))
    fit = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=200).fit(z.reshape(-1, 1), y)
    a, b = float(fit.intercept_[0]), float(fit.coef_[0, 0])
    if b < MIN_SLOPE:
        # no usable ranking on these rows (a day or two of valid data can fit a flat or negative
        # slope): a map with it would flatten or invert the model. Only the calibration in the
        # large is fitted then (slope fixed at 1): the root of sum(y - sigmoid(a + z)) = 0.
        from scipy.optimize import brentq
        from scipy.special import expit

        a, b = float(brentq(lambda c: float(np.sum(y - expit(c + z))), -20.0, 20.0)), 1.0
    lr = max(0.0, 2 * (_log_likelihood(y, a + b * z) - _log_likelihood(y, z)))
    return CalibrationTest(a, b, lr, float(stats.chi2.sf(lr, df=2)), int(len(y)))


def apply_map(p, intercept: float, slope: float) -> np.ndarray:
    """``p`` through the recalibration ``sigmoid(a + b * logit(p))``."""
    from scipy.special import expit

    return expit(intercept + slope * _logit(p))


class Recalibrated:
    """A fitted classifier whose probabilities go through a fitted calibration map.  Scikit-learn
    compatible where the platform needs it (``predict_proba``, ``classes_``, permutation
    importance); ``base`` is the model underneath (the array scorer of ``models.scorer`` scores
    with it and applies :meth:`adjust`)."""

    _estimator_type = "classifier"

    def __init__(self, base, intercept: float, slope: float):
        self.base = base
        self.intercept = float(intercept)
        self.slope = float(slope)

    @property
    def classes_(self):
        return self.base.classes_

    def __sklearn_tags__(self):
        return self.base.__sklearn_tags__()

    def fit(self, X, y):  # never refitted: the map belongs to the fitted base
        raise NotImplementedError("Recalibrated wraps an already fitted model")

    def adjust(self, p) -> np.ndarray:
        return apply_map(p, self.intercept, self.slope)

    def predict_proba(self, X) -> np.ndarray:
        q = self.adjust(self.base.predict_proba(X)[:, 1])
        return np.column_stack([1 - q, q])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def __repr__(self) -> str:
        return f"Recalibrated({self.base!r}, intercept={self.intercept:.4f}, slope={self.slope:.4f})"


def recalibrate_if_needed(model, y_true, p, *, alpha: float) -> tuple[object, CalibrationTest]:
    """``model`` as it is when ``p`` (its probabilities for ``y_true``) passes the calibration test
    at ``alpha``, else wrapped in the fitted map; and the test."""
    test = calibration_test(y_true, p)
    if test.needs_recalibration(alpha):
        return Recalibrated(model, test.intercept, test.slope), test
    return model, test
