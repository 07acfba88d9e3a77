"""Model health: should the champion be retrained?  And: which landing files are new?
(no Dagster here; the sensors call these).

Retraining is requested when, over the last ``days`` scored days,

* live ROC AUC stayed below the champion's holdout ROC AUC minus ``auc_tolerance`` on every one of
  them (daily AUC is noisy: one bad day is not decay), or
* live log loss stayed above the champion's holdout log loss times ``1 + log_loss_tolerance`` on
  every one of them (the model still ranks, but its probabilities are off: a winter model in
  summer predicts a 10% delay rate where 45% happen), or
* drift stayed broad: on every one of those days at least ``drift_share`` of the monitored
  features had a PSI above ``psi_threshold``.  (Weather drifts with the seasons on its own, so
  one drifting feature is not a reason; most of them together is.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class HealthPolicy:
    days: int = 3
    auc_tolerance: float = 0.05
    log_loss_tolerance: float = 0.3
    psi_threshold: float = 0.25
    drift_share: float = 0.5

    @classmethod
    def from_settings(cls, s) -> "HealthPolicy":
        return cls(days=s.health_days, auc_tolerance=s.health_auc_tolerance,
                   log_loss_tolerance=s.health_log_loss_tolerance, psi_threshold=s.health_psi,
                   drift_share=s.health_drift_share)


@dataclasses.dataclass(frozen=True)
class HealthVerdict:
    retrain: bool
    reasons: tuple[str, ...]
    days: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "healthy"


def assess(performance: list[dict], drift: list[dict], holdout: dict[str, dict[str, float]],
           policy: HealthPolicy = HealthPolicy()) -> HealthVerdict:
    """``performance``: rows {date, model_version, roc_auc, log_loss}; ``drift``: rows
    {date, feature, psi}; ``holdout``: the champion's holdout {roc_auc, log_loss} per model version."""
    reasons: list[str] = []
    perf = sorted(performance, key=lambda r: r["date"])[-policy.days:]
    if len(perf) == policy.days and all(str(r["model_version"]) in holdout for r in perf):
        span = f"{policy.days} days {perf[0]['date']}..{perf[-1]['date']}"
        v = str(perf[-1]["model_version"])
        ref = holdout[v]

        def every(pred) -> bool:
            return all(pred(r, holdout[str(r["model_version"])]) for r in perf)

        if every(lambda r, h: r["roc_auc"] == r["roc_auc"] and r["roc_auc"] < h["roc_auc"] - policy.auc_tolerance):
            reasons.append(f"live ROC AUC below champion v{v}'s holdout {ref['roc_auc']:.3f} - "
                           f"{policy.auc_tolerance} on {span} (worst {min(r['roc_auc'] for r in perf):.3f})")
        if every(lambda r, h: h["log_loss"] == h["log_loss"]
                 and r["log_loss"] > h["log_loss"] * (1 + policy.log_loss_tolerance)):
            reasons.append(f"live log loss above champion v{v}'s holdout {ref['log_loss']:.3f} x "
                           f"{1 + policy.log_loss_tolerance} on {span} (worst {max(r['log_loss'] for r in perf):.3f})")
    by_day: dict[str, list[float]] = {}
    for r in drift:
        by_day.setdefault(r["date"], []).append(float(r["psi"]))
    drift_days = sorted(by_day)[-policy.days:]
    if len(drift_days) == policy.days:
        shares = [sum(p > policy.psi_threshold for p in by_day[d]) / len(by_day[d]) for d in drift_days]
        if all(s >= policy.drift_share for s in shares):
            reasons.append(
                f"drift: at least {policy.drift_share:.0%} of features with PSI > {policy.psi_threshold} on "
                f"{policy.days} days {drift_days[0]}..{drift_days[-1]} (min share {min(shares):.0%})")
    return HealthVerdict(bool(reasons), tuple(reasons), tuple(r["date"] for r in perf))


# --- landing-zone fingerprints -----------------------------------------------------------------

def scan_days(root: str, feeds: Iterable[str], state: dict) -> tuple[dict[str, str], dict]:
    """Days whose files exist for *every* feed in ``feeds``, with a content fingerprint per day.

    ``root`` is a folder or an fsspec URI.  ``state`` maps relative file keys to fingerprints (the
    sensor's cursor); returns ({day: fingerprint}, new state).
    """
    from mlops_assets.lib.storage import Location

    loc = Location(root)
    feeds = list(feeds)
    new_state: dict = {}
    per_feed: dict[str, dict[str, str]] = {}
    for feed in feeds:
        per_feed[feed] = {}
        for key in loc.list(feed, ".csv"):
            fp = loc.fingerprint(key, state.get(key))
            new_state[key] = fp
            per_feed[feed][key.rsplit("/", 1)[-1][:-4]] = fp["sha256"]
    complete = set.intersection(*(set(v) for v in per_feed.values())) if per_feed else set()
    days = {d: hashlib.sha256(json.dumps([per_feed[f][d] for f in feeds]).encode()).hexdigest()[:16]
            for d in sorted(complete)}
    return days, new_state
