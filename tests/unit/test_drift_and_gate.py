import math

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.drift import build_reference, drift_report, psi
from mlops_assets.lib.metrics import GateDecision, classification_metrics


def test_psi_matches_hand_computation():
    # sum((a - e) * ln(a / e)) = (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected, rel=1e-9)
    assert psi([50, 50], [25, 75]) == pytest.approx(0.2747, abs=1e-4)
    # Counts or proportions give the same; identical distributions give 0.
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-12)
    # Three bins by hand.
    e, a = np.array([0.2, 0.3, 0.5]), np.array([0.1, 0.4, 0.5])
    assert psi(e, a) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_drift_report_flags_a_shifted_feature_only():
    rng = np.random.default_rng(0)
    ref_df = pd.DataFrame({"x": rng.normal(0, 1, 5000), "y": rng.normal(0, 1, 5000),
                           "c": rng.choice(["a", "b"], 5000)})
    ref = build_reference(ref_df, ["x", "y"], ["c"])
    cur = pd.DataFrame({"x": rng.normal(1.5, 1, 1000), "y": rng.normal(0, 1, 1000),
                        "c": rng.choice(["a", "b"], 1000)})
    rep = drift_report(ref, cur).set_index("feature")
    assert rep.loc["x", "level"] == "major" and rep.loc["x", "psi"] > 0.25
    assert rep.loc["y", "level"] == "none" and rep.loc["y", "psi"] < 0.1
    assert rep.loc["c", "level"] == "none"
    assert rep.loc["x", "ks_pvalue"] < 1e-6 < rep.loc["y", "ks_pvalue"]


@pytest.mark.parametrize(
    "challenger, champion, promote, floor, beats",
    [
        (0.70, None, True, True, True),     # no champion: floor alone decides
        (0.55, None, False, False, True),   # below floor, no champion
        (0.70, 0.65, True, True, True),     # beats champion by more than delta
        (0.66, 0.65, False, True, False),   # beats, but by less than delta 0.02
        (0.67, 0.65, True, True, True),     # exactly delta
        (0.64, 0.65, False, True, False),   # worse than champion
        (0.58, 0.50, False, False, True),   # beats a bad champion but below floor
        (float("nan"), 0.65, False, False, False),
    ],
)
def test_gate_truth_table(challenger, champion, promote, floor, beats):
    d = GateDecision(challenger, champion, min_auc=0.60, min_delta=0.02)
    assert (d.promote, d.passes_floor, d.beats_champion) == (promote, floor, beats)
    assert d.describe().startswith("PROMOTE" if promote else "BLOCK")


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["actual_rate"] == 0.5 and m["predicted_rate"] == pytest.approx(0.4125)
    assert math.isnan(classification_metrics([1, 1], [0.2, 0.9])["roc_auc"])
