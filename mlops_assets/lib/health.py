"""Model health: has the champion decayed?  And the retraining policy that acts on it (no Dagster
here; the model-health sensor calls these).

The verdict pools the champion's own last ``days`` scored days (flights it predicted, whose
outcomes have landed; days scored by an earlier champion do not count) and calls it *decayed*
when one of these holds, each with its sampling error accounted for:

* **calibration**: its predicted delay rate is off the realised one by more than
  ``calibration_gap`` on average over those days, and that mean gap is at least two standard
  errors of the daily gaps from zero (the world's delay rate moved: a winter model in summer
  predicts 25% where 45% happen).  On 2013 this is the signal that says when a fresh model
  would help: an offline replay of HistGradientBoosting models (43 weeks) retrained on it 20
  times reached a mean weekly AUC of 0.691, against 0.685 retraining every week and 0.652 frozen;
* **ranking**: the pooled ROC AUC's upper 95% bound (Hanley-McNeil standard error) is below the
  champion's holdout AUC minus ``auc_tolerance`` (a broken feature, a new route mix);
* **probabilities**: the pooled log loss is above the holdout log loss times
  ``1 + log_loss_tolerance``;
* **drift**: on every one of those days the features in alarm (PSI above the threshold
  calibrated on the champion's own training window, ``lib.drift``) hold at least
  ``drift_share`` of the model's feature importance; or on every one of those days the
  distribution of the champion's own output is in alarm.  (Rows from before the calibrated
  thresholds: PSI above ``psi_threshold``, features unweighted.)

Until the champion has ``days`` labelled days of its own, the verdict is ``waiting``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from datetime import date, timedelta

import numpy as np
import pandas as pd

from mlops_assets.settings import RETRAIN_POLICIES as POLICIES
from mlops_assets.settings import Settings


@dataclasses.dataclass(frozen=True)
class HealthPolicy:
    # the defaults are the settings' (MLOPS_HEALTH_*), written once in settings.Settings
    days: int = Settings.health_days
    calibration_gap: float = Settings.health_calibration_gap
    auc_tolerance: float = Settings.health_auc_tolerance
    log_loss_tolerance: float = Settings.health_log_loss_tolerance
    psi_threshold: float = Settings.health_psi
    drift_share: float = Settings.health_drift_share

    @classmethod
    def from_settings(cls, s) -> "HealthPolicy":
        return cls(days=s.health_days, calibration_gap=s.health_calibration_gap,
                   auc_tolerance=s.health_auc_tolerance, log_loss_tolerance=s.health_log_loss_tolerance,
                   psi_threshold=s.health_psi, drift_share=s.health_drift_share)


@dataclasses.dataclass(frozen=True)
class HealthVerdict:
    status: str  # "healthy", "decayed" or "waiting"
    reasons: tuple[str, ...]
    days: tuple[str, ...]
    version: str | None = None
    metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        return self.status == "decayed"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or self.status


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of a ROC AUC from its value and class counts.
    (Flights of one day share their weather, so it is a lower bound of the true error; the
    tolerance above it is wide for that reason.)"""
    if positives < 1 or negatives < 1 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(max(var, 0.0) / (positives * negatives))


def assess(scored: pd.DataFrame, champion: str | None, holdout: dict[str, float] | None,
           drift: Iterable[dict] = (), policy: HealthPolicy = HealthPolicy()) -> HealthVerdict:
    """``scored``: labelled predictions, columns ``date``, ``model_version``,
    ``delay_probability``, ``label``; ``holdout``: the champion's holdout ``roc_auc`` and
    ``log_loss``; ``drift``: rows {date, feature, psi[, kind, alarm, importance]} (calendar
    features already left out)."""
    from sklearn.metrics import log_loss, roc_auc_score

    if champion is None:
        return HealthVerdict("waiting", ("no champion",), ())
    mine = scored[scored["model_version"].astype(str) == str(champion)] if len(scored) else scored
    days = sorted(mine["date"].unique()) if len(mine) else []
    window = days[-policy.days:]
    if len(window) < policy.days:
        return HealthVerdict("waiting", (f"v{champion} has {len(window)} of {policy.days} labelled days",),
                             tuple(window), str(champion))
    rows = mine[mine["date"].isin(window)]
    y = rows["label"].to_numpy(dtype=float)
    p = np.clip(rows["delay_probability"].to_numpy(dtype=float), 1e-7, 1 - 1e-7)
    span = f"v{champion} on {len(window)} days {window[0]}..{window[-1]}"
    reasons: list[str] = []
    daily = rows.groupby("date").agg(pred=("delay_probability", "mean"), act=("label", "mean"))
    gaps = (daily["pred"] - daily["act"]).to_numpy()
    gap = float(gaps.mean())
    gap_se = float(gaps.std(ddof=1) / math.sqrt(len(gaps))) if len(gaps) > 1 else float("inf")
    gap_t = abs(gap) / gap_se if gap_se > 0 else float("inf")
    metrics = {"live_rate": float(y.mean()), "predicted_rate": float(p.mean()), "calibration_gap": gap,
               "calibration_gap_t": gap_t, "flights": int(len(y))}
    if abs(gap) > policy.calibration_gap and gap_t >= 2:
        reasons.append(f"calibration: predicted delay rate {p.mean():.3f} vs realised {y.mean():.3f} "
                       f"(mean daily gap {gap:+.3f}, {gap_t:.1f} standard errors) {span}")
    if 0 < y.sum() < len(y):
        auc = float(roc_auc_score(y, p))
        ll = float(log_loss(y, p, labels=[0, 1]))
        se = auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum()))
        metrics.update(live_auc=auc, live_auc_ci_high=auc + 1.96 * se, live_log_loss=ll)
        if holdout and np.isfinite(holdout.get("roc_auc", float("nan"))):
            if auc + 1.96 * se < holdout["roc_auc"] - policy.auc_tolerance:
                reasons.append(f"ranking: live ROC AUC {auc:.3f} (95% upper bound {auc + 1.96 * se:.3f}) below "
                               f"holdout {holdout['roc_auc']:.3f} - {policy.auc_tolerance} {span}")
        if holdout and np.isfinite(holdout.get("log_loss", float("nan"))):
            if ll > holdout["log_loss"] * (1 + policy.log_loss_tolerance):
                reasons.append(f"probabilities: live log loss {ll:.3f} above holdout {holdout['log_loss']:.3f} x "
                               f"{1 + policy.log_loss_tolerance} {span}")
    from mlops_assets.lib.drift import alarm_rows, weighted_alarm_share

    drift_df = pd.DataFrame(list(drift))
    if len(drift_df):
        drift_df = drift_df[drift_df["date"].isin(window)]
    if len(drift_df) and drift_df["date"].nunique() == len(window):
        if "alarm" not in drift_df:
            drift_df["alarm"] = drift_df["psi"] > policy.psi_threshold
        drift_df = alarm_rows(drift_df)
        shares = [weighted_alarm_share(g) for _, g in drift_df.groupby("date")]
        outputs = [bool(g.loc[g["kind"] == "output", "alarm"].any()) for _, g in drift_df.groupby("date")]
        metrics["drift_share_min"] = min(shares)
        if all(x >= policy.drift_share for x in shares):
            reasons.append(f"drift: features holding at least {policy.drift_share:.0%} of the model's importance in "
                           f"alarm on every day {window[0]}..{window[-1]} (min share {min(shares):.0%})")
        if all(outputs):
            reasons.append(f"output drift: the distribution of v{champion}'s predictions in alarm on every day "
                           f"{window[0]}..{window[-1]}")
    return HealthVerdict("decayed" if reasons else "healthy", tuple(reasons), tuple(window), str(champion), metrics)


# --- the retraining policy ----------------------------------------------------------------------

def first_full_week(start: str, train_weeks: int) -> str:
    """The first weekly partition (a Monday) whose whole training window lies in the span."""
    d = date.fromisoformat(start)
    monday = d + timedelta(days=(7 - d.weekday()) % 7)
    return (monday + timedelta(weeks=train_weeks - 1)).isoformat()


def latest_complete_week(labelled_days: set[str], not_before: str) -> str | None:
    """The latest week (its Monday, not before ``not_before``) all 7 of whose days are labelled."""
    if not labelled_days:
        return None
    d = date.fromisoformat(max(labelled_days))
    monday = d - timedelta(days=d.weekday())
    while monday.isoformat() >= not_before:
        if all((monday + timedelta(days=i)).isoformat() in labelled_days for i in range(7)):
            return monday.isoformat()
        monday -= timedelta(days=7)
    return None


@dataclasses.dataclass(frozen=True)
class TrainingDecision:
    week: str
    kind: str  # "cold_start", "weekly" or "health"
    reason: str


def decide(policy: str, *, complete_week: str | None, champion_week: str | None,
           verdict: HealthVerdict | None) -> TrainingDecision | None:
    """Whether to train, and which week, under ``policy``:

    * every policy: **cold start**, when there is no champion, on the latest complete week
      (once the first full training window exists);
    * ``frozen``: nothing more;
    * ``weekly``: every complete week newer than the champion's;
    * ``health``: the latest complete week newer than the champion's, when the verdict is decayed.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown retraining policy {policy!r}; expected one of {POLICIES}")
    if complete_week is None:
        return None
    if champion_week is None:
        return TrainingDecision(complete_week, "cold_start", "cold start: no champion yet")
    if complete_week <= champion_week or policy == "frozen":
        return None
    if policy == "weekly":
        return TrainingDecision(complete_week, "weekly", f"weekly: week {complete_week} is complete")
    if verdict is not None and verdict.retrain:
        return TrainingDecision(complete_week, "health", verdict.reason)
    return None
