"""Drift alarms calibrated on the reference's own variability, on real 2013 days."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.drift import OUTPUT, build_reference, drift_report, weighted_alarm_share
from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES, examples_from_source


def _days(start: str, n: int) -> list[str]:
    d0 = date.fromisoformat(start)
    return [(d0 + timedelta(days=i)).isoformat() for i in range(n)]


@pytest.fixture(scope="module")
def window():
    """A 6-week training window of real flights (2013-04-01..2013-05-12) and its reference."""
    days = _days("2013-04-01", 42)
    rows = examples_from_source(days)
    return days, rows, build_reference(rows, DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES)


def test_every_week_of_the_training_window_gets_no_alarm(window):
    days, rows, ref = window
    assert set(ref["thresholds"]) == set(DRIFT_NUMERIC_FEATURES) | set(CATEGORICAL_FEATURES)
    fixed_majors = 0
    for s in range(0, len(days) - 6):
        rep = drift_report(ref, rows[rows["date"].isin(days[s:s + 7])])
        assert not rep["alarm"].any(), rep.loc[rep["alarm"], ["feature", "psi", "threshold"]]
        assert (rep["level"] == "major").sum() == 0
        fixed_majors += int((rep["psi"] > 0.25).sum())
    # the old fixed threshold rang on these very weeks
    assert fixed_majors > 36


def test_weather_thresholds_are_wider_than_the_schedule_ones(window):
    _, _, ref = window
    th = ref["thresholds"]
    # a week holds few independent weather values: its PSI swings far more than a schedule's
    assert min(th[c] for c in ("temp", "dewp", "pressure")) > 1.0
    assert th["carrier"] < 0.25 and th["sched_dep_hour"] < 0.25


@pytest.mark.parametrize("shift, feature", [
    (lambda w: w.assign(temp=w["temp"] + 25), "temp"),
    (lambda w: w.assign(carrier="UA"), "carrier"),
])
def test_a_synthetic_shift_is_flagged_on_the_shifted_feature_only(window, shift, feature):
    days, rows, ref = window
    week = rows[rows["date"].isin(days[14:21])]
    rep = drift_report(ref, shift(week)).set_index("feature")
    assert list(rep.index[rep["alarm"]]) == [feature]
    assert rep.loc[feature, "level"] == "major"


def test_output_drift_and_importance_weighting():
    rng = np.random.default_rng(1)
    days = _days("2013-01-01", 21)
    df = pd.DataFrame({"date": np.repeat(days, 300), "x": rng.normal(0, 1, 6300), "z": rng.normal(0, 1, 6300),
                       "c": rng.choice(["a", "b"], 6300)})
    out = 1 / (1 + np.exp(-df["x"].to_numpy()))
    ref = build_reference(df, ["x", "z"], ["c"], output=out, importance={"x": 0.09, "z": 0.01, "c": 0.0})
    assert OUTPUT in ref["thresholds"]
    cur = df[df["date"].isin(days[:7])].assign(z=lambda d: d["z"] + 3)  # an unimportant feature moves
    rep = drift_report(ref, cur, output=1 / (1 + np.exp(-cur["x"].to_numpy())))
    assert rep.set_index("feature")["alarm"].to_dict() == {"x": False, "z": True, OUTPUT: False, "c": False}
    assert weighted_alarm_share(rep) == pytest.approx(0.1)
    cur = cur.assign(x=lambda d: d["x"] + 2)  # the important one moves: so does the output
    rep = drift_report(ref, cur, output=1 / (1 + np.exp(-cur["x"].to_numpy()))).set_index("feature")
    assert rep.loc["x", "alarm"] and rep.loc[OUTPUT, "alarm"] and rep.loc[OUTPUT, "kind"] == "output"
    assert weighted_alarm_share(rep.reset_index()) == pytest.approx(1.0)
