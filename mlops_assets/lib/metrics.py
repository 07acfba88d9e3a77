"""Classification metrics and the promotion gate (no Dagster here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


def classification_metrics(y_true, p) -> dict[str, float]:
    """ROC AUC, log loss, Brier score, and predicted vs actual positive rate."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    out = {
        "n": float(len(y)),
        "actual_rate": float(y.mean()) if len(y) else float("nan"),
        "predicted_rate": float(p.mean()) if len(p) else float("nan"),
    }
    if len(y) and 0 < y.sum() < len(y):
        out["roc_auc"] = float(roc_auc_score(y, p))
        out["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
    else:  # one class only: AUC undefined
        out["roc_auc"] = float("nan")
        out["log_loss"] = float("nan")
    out["brier"] = float(brier_score_loss(y, p)) if len(y) else float("nan")
    return out


def estimated_performance(p, bias: dict | None = None) -> dict[str, float]:
    """Confidence-based performance estimation (CBPE, as NannyML states it): the ROC AUC and log
    loss a day's predictions should reach *if the probabilities are calibrated*, from the
    probabilities alone, before any outcome lands (``bias``: ``estimate_bias`` of the model's
    holdout: its AUC correction is added).  Each row counts as a positive with weight
    ``p`` and as a negative with weight ``1 - p``: the expected AUC is the weighted share of
    (positive, negative) pairs of different rows ranked right (ties half), the expected log loss
    the mean entropy of the predictions."""
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    if len(p) < 2:
        return {"estimated_roc_auc": float("nan"), "estimated_log_loss": float("nan")}
    values, inverse = np.unique(p, return_inverse=True)
    pos = np.bincount(inverse, weights=p, minlength=len(values))
    neg = np.bincount(inverse, weights=1 - p, minlength=len(values))
    below = np.cumsum(neg) - neg  # negatives' weight at strictly lower scores
    # pairs of different rows: a row is never paired with itself (sum p(1-p) over rows)
    same_row = float(np.sum(p * (1 - p)))
    ranked = float(np.sum(pos * below) + 0.5 * (np.sum(pos * neg) - same_row))
    pairs = float(pos.sum() * neg.sum() - same_row)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    # Only the AUC is corrected: on 2013 (bench/signals.py, 302 days) the holdout's correction
    # halves the AUC estimate's error (median 0.100 -> 0.053) but makes the log loss's worse
    # (0.085 -> 0.111), whose holdout gap is mostly that week's own delay rate.
    auc_bias = (bias or {}).get("roc_auc_bias", 0.0)
    return {"estimated_roc_auc": (ranked / pairs if pairs > 0 else float("nan")) + auc_bias,
            "estimated_log_loss": float(entropy.mean())}


def estimate_bias(dates, y_true, p) -> dict[str, float]:
    """How far the realised daily ROC AUC and log loss fall from the CBPE estimate on labelled
    days (the holdout, at training time): the mean daily difference; the AUC one is added to every later
    estimate of this model.  Flights of a day share their weather and the day's own disruptions,
    which the probabilities do not see, so a day's realised AUC falls short of what its
    probabilities promise (measured on 2013: -0.015 to -0.19, changing with the season)."""
    frame = pd.DataFrame({"date": np.asarray(dates), "y": np.asarray(y_true, dtype=float), "p": np.asarray(p, dtype=float)})
    auc, ll = [], []
    for _, g in frame.groupby("date"):
        real = classification_metrics(g["y"], g["p"])
        est = estimated_performance(g["p"])
        if np.isfinite(real["roc_auc"]):
            auc.append(real["roc_auc"] - est["estimated_roc_auc"])
            ll.append(real["log_loss"] - est["estimated_log_loss"])
    return {"roc_auc_bias": float(np.mean(auc)) if auc else 0.0,
            "log_loss_bias": float(np.mean(ll)) if ll else 0.0, "days": len(auc)}


def calibration_table(y_true, p, bins: int = 10) -> dict:
    """Reliability on equal-count bins of the predicted probability: per bin the mean predicted
    and the realised rate, and the expected calibration error (the count-weighted mean gap)."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(p, dtype=float)
    if not len(y):
        return {"ece": float("nan"), "bins": []}
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, len(order))):
        rows.append({"n": int(len(part)), "predicted": float(p[part].mean()), "realised": float(y[part].mean())})
    ece = sum(r["n"] * abs(r["predicted"] - r["realised"]) for r in rows) / len(y)
    return {"ece": float(ece), "bins": rows}


def paired_auc_difference(y_true, p_challenger, p_champion, *, level: float = 0.95) -> dict[str, float]:
    """DeLong's test of two ROC AUCs on the same rows (DeLong, DeLong & Clarke-Pearson 1988, in the
    midrank form of Sun & Xu 2014): both AUCs, their difference (challenger - champion), its
    standard error from the covariance of the two models' structural components, a two-sided
    ``level`` confidence interval and the p-value of "no difference"."""
    from scipy import stats

    y = np.asarray(y_true).astype(bool)
    scores = np.vstack([np.asarray(p_challenger, dtype=float), np.asarray(p_champion, dtype=float)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return {"auc_challenger": nan, "auc_champion": nan, "auc_delta": nan, "auc_delta_se": nan,
                "auc_delta_ci_low": nan, "auc_delta_ci_high": nan, "p_value": nan}
    pos, neg = scores[:, y], scores[:, ~y]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:, :m] - tx) / n          # per positive: share of negatives it outranks
    v10 = 1.0 - (tz[:, m:] - ty) / m    # per negative: share of positives that outrank it
    cov = np.cov(v01) / m + np.cov(v10) / n
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    delta = float(aucs[0] - aucs[1])
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(delta) / se)) if se > 0 else (0.0 if delta else 1.0)
    return {"auc_challenger": float(aucs[0]), "auc_champion": float(aucs[1]), "auc_delta": delta,
            "auc_delta_se": se, "auc_delta_ci_low": delta - z * se, "auc_delta_ci_high": delta + z * se,
            "p_value": p}


def paired_log_loss_difference(y_true, p_challenger, p_champion, *, level: float = 0.95) -> dict[str, float]:
    """The log loss difference of two models on the same rows (challenger - champion): the mean of
    the per-row differences, with a normal ``level`` interval from their standard error."""
    from scipy import stats

    y = np.asarray(y_true, dtype=float)
    a = np.clip(np.asarray(p_challenger, dtype=float), 1e-7, 1 - 1e-7)
    b = np.clip(np.asarray(p_champion, dtype=float), 1e-7, 1 - 1e-7)
    diff = -(y * np.log(a) + (1 - y) * np.log(1 - a)) + (y * np.log(b) + (1 - y) * np.log(1 - b))
    if len(diff) < 2:
        nan = float("nan")
        return {"log_loss_delta": nan, "log_loss_delta_ci_low": nan, "log_loss_delta_ci_high": nan}
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    m = float(diff.mean())
    return {"log_loss_delta": m, "log_loss_delta_ci_low": m - z * se, "log_loss_delta_ci_high": m + z * se}


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The gate, stated as MLflow's ``MetricThreshold`` and made statistical:

    * **floor**: the challenger's holdout ROC AUC is at least ``min_auc``;
    * **beats the champion**: on the same holdout rows, the lower bound of the 95% confidence
      interval of the paired AUC difference (DeLong) is at least ``min_delta``: a challenger must
      be *shown* better, so two equally good models do not replace each other at random
      (without an interval, the point difference is used, as before);
    * **calibration guard**: the challenger's holdout log loss is no worse than the champion's by
      more than ``log_loss_tolerance``, judged on the same rows with its sampling error: it blocks
      when the lower 95% bound of the paired difference is above the tolerance (a better ranking
      with broken probabilities would mislead
      every consumer of the probabilities and the health verdict's calibration rule).

    With no champion, the floor alone decides."""

    challenger_auc: float
    champion_auc: float | None
    min_auc: float
    min_delta: float
    auc_delta_ci_low: float | None = None
    auc_delta_ci_high: float | None = None
    challenger_log_loss: float | None = None
    champion_log_loss: float | None = None
    log_loss_tolerance: float = 0.01
    log_loss_delta_ci_low: float | None = None

    @classmethod
    def compare(cls, y_true, p_challenger, p_champion, *, min_auc: float, min_delta: float,
                log_loss_tolerance: float = 0.01) -> "GateDecision":
        """The gate on holdout labels and both models' probabilities for the same rows
        (``p_champion`` None: no champion)."""
        mine = classification_metrics(y_true, p_challenger)
        if p_champion is None:
            return cls(mine["roc_auc"], None, min_auc, min_delta, challenger_log_loss=mine["log_loss"],
                       log_loss_tolerance=log_loss_tolerance)
        theirs = classification_metrics(y_true, p_champion)
        d = paired_auc_difference(y_true, p_challenger, p_champion)
        ll = paired_log_loss_difference(y_true, p_challenger, p_champion)
        return cls(mine["roc_auc"], theirs["roc_auc"], min_auc, min_delta, d["auc_delta_ci_low"],
                   d["auc_delta_ci_high"], mine["log_loss"], theirs["log_loss"], log_loss_tolerance,
                   ll["log_loss_delta_ci_low"])

    @property
    def has_champion(self) -> bool:
        return self.champion_auc is not None and bool(np.isfinite(self.champion_auc))

    @property
    def auc_delta(self) -> float | None:
        return self.challenger_auc - self.champion_auc if self.has_champion else None

    @property
    def passes_floor(self) -> bool:
        return bool(np.isfinite(self.challenger_auc) and self.challenger_auc >= self.min_auc)

    @property
    def beats_champion(self) -> bool:
        if not self.has_champion:
            return True
        if self.auc_delta_ci_low is not None:
            return bool(np.isfinite(self.auc_delta_ci_low) and self.auc_delta_ci_low >= self.min_delta)
        return bool(np.isfinite(self.challenger_auc) and self.challenger_auc >= self.champion_auc + self.min_delta)

    @property
    def calibrated(self) -> bool:
        if not self.has_champion or self.champion_log_loss is None or self.challenger_log_loss is None:
            return True
        if self.log_loss_delta_ci_low is not None and np.isfinite(self.log_loss_delta_ci_low):
            return bool(self.log_loss_delta_ci_low <= self.log_loss_tolerance)  # not shown worse
        return bool(self.challenger_log_loss <= self.champion_log_loss + self.log_loss_tolerance)

    @property
    def promote(self) -> bool:
        return self.passes_floor and self.beats_champion and self.calibrated

    def describe(self) -> str:
        verdict = "PROMOTE" if self.promote else "BLOCK"
        out = (f"{verdict}: challenger AUC {self.challenger_auc:.4f} (floor {self.min_auc:.2f}: "
               f"{'pass' if self.passes_floor else 'fail'}); ")
        if not self.has_champion:
            return out + "no champion"
        if self.auc_delta_ci_low is not None:
            out += (f"vs champion {self.champion_auc:.4f}: delta {self.auc_delta:+.4f}, 95% CI "
                    f"[{self.auc_delta_ci_low:+.4f}, {self.auc_delta_ci_high:+.4f}], lower bound >= "
                    f"{self.min_delta:+.4f}: {'pass' if self.beats_champion else 'fail'}")
        else:
            out += (f"champion AUC {self.champion_auc:.4f}, min delta {self.min_delta:+.4f}: "
                    f"{'pass' if self.beats_champion else 'fail'}")
        if self.champion_log_loss is not None and self.challenger_log_loss is not None:
            out += (f"; log loss {self.challenger_log_loss:.4f} vs champion {self.champion_log_loss:.4f} + "
                    f"{self.log_loss_tolerance}: {'pass' if self.calibrated else 'fail'}")
        return out

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def gate_from(value: dict) -> GateDecision:
    """The gate decision the ``challenger`` asset took, rebuilt from its output value (``champion``
    re-applies it).  A value from before the statistical gate carries only the point AUCs."""
    if "decision" in value:
        return GateDecision(**value["decision"])
    return GateDecision(challenger_auc=value["holdout"]["roc_auc"], champion_auc=value.get("champion_auc"),
                        min_auc=value["gate"]["min_auc"], min_delta=value["gate"]["min_delta"])
