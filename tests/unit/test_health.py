"""The model-health verdict and the retraining policy (lib.health), on synthetic scored days
whose truth is known."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.health import (HealthPolicy, HealthVerdict, assess, auc_standard_error, decide,
                                     first_full_week, latest_complete_week)

HOLDOUT = {"roc_auc": 0.70, "log_loss": 0.50}
P = HealthPolicy(days=7)


def scored(days=7, version="3", rate=0.2, bias=0.0, signal=1.0, n=900, seed=0, start="2013-06-10"):
    """Flights of ``days`` days: labels drawn at ``rate``; the model's probability is the truth
    (+ noise, weighted by ``signal``) shifted by ``bias``."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, day in enumerate(pd.date_range(start, periods=days).strftime("%Y-%m-%d")):
        z = rng.normal(size=n)
        true_p = 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + 1.2 * z)))
        y = rng.random(n) < true_p
        noisy = 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + 1.2 * (signal * z + (1 - signal) * rng.normal(size=n)))))
        frames.append(pd.DataFrame({"date": day, "model_version": version, "label": y.astype(float),
                                    "delay_probability": np.clip(noisy + bias, 0.001, 0.999)}))
    return pd.concat(frames, ignore_index=True)


def test_a_model_that_still_fits_is_healthy():
    v = assess(scored(), "3", {"roc_auc": 0.80, "log_loss": 0.45}, policy=P)
    assert v.status == "healthy" and not v.retrain, v.reasons
    assert 0.75 < v.metrics["live_auc"] < 0.85 and abs(v.metrics["calibration_gap"]) < 0.02


def test_a_shifted_delay_rate_is_decay_by_calibration():
    # the world's delay rate rose from 20% to 45%: the model still predicts ~20%
    world = scored(rate=0.45)
    world["delay_probability"] = scored(rate=0.20, seed=1)["delay_probability"].to_numpy()
    v = assess(world, "3", HOLDOUT, policy=P)
    assert v.retrain and any(r.startswith("calibration") for r in v.reasons), v.reasons
    assert v.metrics["calibration_gap"] < -0.08 and v.metrics["calibration_gap_t"] >= 2


def test_one_odd_day_is_not_a_calibration_decay():
    # six days fine, one storm day: the mean gap stays under the tolerance
    world = scored()
    storm = world["date"] == world["date"].max()
    world.loc[storm, "label"] = 1.0
    v = assess(world, "3", {"roc_auc": 0.5, "log_loss": 5.0}, policy=P)
    assert not any(r.startswith("calibration") for r in v.reasons), v.reasons


def test_ranking_decay_needs_the_whole_confidence_interval_below_the_tolerance():
    broken = scored(signal=0.0)  # the model's scores carry no information
    v = assess(broken, "3", {"roc_auc": 0.80, "log_loss": 9.0}, policy=P)
    assert v.retrain and any(r.startswith("ranking") for r in v.reasons), v.reasons
    # a small dip within the tolerance and its error does not trigger
    ok = assess(scored(), "3", {"roc_auc": 0.85, "log_loss": 9.0}, policy=P)
    assert not any(r.startswith("ranking") for r in ok.reasons)


def test_auc_standard_error_matches_the_spread_of_resampled_aucs():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    aucs = []
    for _ in range(300):
        y = rng.random(2000) < 0.2
        s = rng.normal(size=2000) + 0.8 * y
        aucs.append(roc_auc_score(y, s))
    se = auc_standard_error(float(np.mean(aucs)), 400, 1600)
    assert abs(se - np.std(aucs)) / np.std(aucs) < 0.25


def test_the_verdict_waits_for_the_champions_own_days():
    mixed = pd.concat([scored(days=4, version="2"), scored(days=3, version="3", start="2013-06-14")])
    v = assess(mixed, "3", HOLDOUT, policy=P)
    assert v.status == "waiting" and not v.retrain and "3 of 7" in v.reason
    assert assess(scored(), None, HOLDOUT, policy=P).status == "waiting"


def test_broad_drift_on_every_day_decays_narrow_drift_does_not():
    days = sorted(scored()["date"].unique())

    def drift(share):
        return [{"date": d, "feature": f"f{j}", "psi": 0.5 if j < share * 10 else 0.01} for d in days for j in range(10)]

    healthy = {"roc_auc": 0.5, "log_loss": 9.0}
    assert not any(r.startswith("drift") for r in assess(scored(), "3", healthy, drift(0.3), P).reasons)
    assert any(r.startswith("drift") for r in assess(scored(), "3", healthy, drift(0.6), P).reasons)


def test_weeks_and_cold_start():
    assert first_full_week("2013-01-01", 8) == "2013-02-25"  # 2013-01-07 + 7 weeks
    assert first_full_week("2013-01-07", 2) == "2013-01-14"
    days = {d.strftime("%Y-%m-%d") for d in pd.date_range("2013-02-25", "2013-03-09")}
    assert latest_complete_week(days, "2013-02-25") == "2013-02-25"  # 03-04 lacks its Sunday
    assert latest_complete_week(days, "2013-03-04") is None
    assert latest_complete_week(set(), "2013-01-01") is None


DECAYED = HealthVerdict("decayed", ("calibration: ...",), ("2013-06-30",), "3")
HEALTHY = HealthVerdict("healthy", (), ("2013-06-30",), "3")


@pytest.mark.parametrize("policy, champion_week, verdict, expected", [
    ("frozen", None, None, ("2013-06-24", "cold_start")),
    ("weekly", None, None, ("2013-06-24", "cold_start")),
    ("health", None, None, ("2013-06-24", "cold_start")),
    ("frozen", "2013-03-04", DECAYED, None),            # frozen never retrains after cold start
    ("weekly", "2013-06-17", HEALTHY, ("2013-06-24", "weekly")),
    ("weekly", "2013-06-24", DECAYED, None),            # that week is the champion's already
    ("health", "2013-03-04", HEALTHY, None),
    ("health", "2013-03-04", None, None),
    ("health", "2013-03-04", DECAYED, ("2013-06-24", "health")),
])
def test_each_policy_decides(policy, champion_week, verdict, expected):
    d = decide(policy, complete_week="2013-06-24", champion_week=champion_week, verdict=verdict)
    assert (None if d is None else (d.week, d.kind)) == expected
    assert decide(policy, complete_week=None, champion_week=None, verdict=None) is None
    with pytest.raises(ValueError, match="unknown retraining policy"):
        decide("sometimes", complete_week="2013-06-24", champion_week=None, verdict=None)
