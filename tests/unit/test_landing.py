"""The landing zone reconciled with what the instance recorded (lib.landing): scans, the assets
each day needs, and range grouping."""

import os
import time

from mlops_assets.lib.landing import DAILY_ASSETS, Deployment, DayState, due_assets, plan, scan

DONE = frozenset(DAILY_ASSETS)
L = ("raw_flights", "raw_weather", "flight_features")


def files(days, outcomes=(), sha="s"):
    return {"schedules": {d: f"{sha}-sched-{d}" for d in days}, "weather": {d: f"{sha}-wx-{d}" for d in days},
            "outcomes": {d: f"{sha}-out-{d}" for d in outcomes}}


def recorded(day, outcomes=True, sha="s", have=DONE):
    rec = {"raw_flights": f"{sha}-sched-{day}", "raw_weather": f"{sha}-wx-{day}"}
    if outcomes:
        rec["flight_outcomes"] = f"{sha}-out-{day}"
    return DayState(rec, have)


def test_a_day_materialised_from_the_same_files_needs_nothing():
    f = files(["2013-01-02"], ["2013-01-02"])
    assert due_assets("2013-01-02", f, recorded("2013-01-02"), Deployment("1", "2013-01-01")) == ()


def test_a_new_day_needs_its_chain_and_its_outcomes_join_once_features_can_exist():
    f = files(["2013-01-02"], ["2013-01-02"])
    assert due_assets("2013-01-02", f, DayState({}, frozenset()), None) == L + ("flight_outcomes", "training_examples")
    # outcomes alone, features missing and not due (no schedule): nothing yet
    only_out = {"schedules": {}, "weather": {}, "outcomes": {"2013-01-02": "o"}}
    assert due_assets("2013-01-02", only_out, DayState({}, frozenset()), None) == ()


def test_a_rewritten_schedule_redoes_only_what_depends_on_it():
    f = files(["2013-01-02"], ["2013-01-02"])
    f["schedules"]["2013-01-02"] = "new"
    due = due_assets("2013-01-02", f, recorded("2013-01-02"), Deployment("1", "2013-01-01"))
    assert "raw_weather" not in due
    assert due == ("raw_flights", "flight_features", "flight_outcomes", "training_examples",
                   "flight_delay_predictions", "feature_drift", "prediction_performance")


def test_rewritten_outcomes_redo_the_labels_and_the_live_performance_only():
    f = files(["2013-01-02"], ["2013-01-02"])
    f["outcomes"]["2013-01-02"] = "corrected"
    assert due_assets("2013-01-02", f, recorded("2013-01-02"), Deployment("1", "2013-01-01")) == (
        "flight_outcomes", "training_examples", "prediction_performance")


def test_scoring_is_live_only():
    dep = Deployment("4", "2013-03-03")
    f = files(["2013-03-03", "2013-03-04", "2013-03-05"], ["2013-03-03"])
    have = frozenset({"raw_flights", "raw_weather", "flight_features"})
    # a day of the model's own training data is never scored by it
    assert "flight_delay_predictions" not in due_assets("2013-03-03", f, recorded("2013-03-03", have=have | {
        "flight_outcomes", "training_examples"}), dep)
    # a day that landed before the deployment is scored once it exists, while its outcomes are outstanding
    assert due_assets("2013-03-04", f, recorded("2013-03-04", outcomes=False, have=have), dep) == (
        "flight_delay_predictions", "feature_drift")
    # ... but not once they have landed (that would be a backtest)
    f["outcomes"]["2013-03-05"] = "s-out-2013-03-05"
    assert due_assets("2013-03-05", f, recorded("2013-03-05", have=have | {"flight_outcomes", "training_examples"}),
                      dep) == ()


def test_days_group_into_ranges_by_what_is_due_and_busy_days_wait():
    days = [f"2013-01-{d:02d}" for d in range(1, 9)]
    f = files(days, days[:-1])
    states = {d: DayState({}, frozenset()) for d in days}
    groups = plan(days, f, states, None)
    assert [(g.first, g.last, len(g.assets)) for g in groups] == [("2013-01-01", "2013-01-07", 5),
                                                                    ("2013-01-08", "2013-01-08", 3)]
    states["2013-01-04"] = recorded("2013-01-04")  # done already: splits the range
    groups = plan(days, f, states, None, busy={"2013-01-02"})
    assert [(g.first, g.last) for g in groups] == [("2013-01-01", "2013-01-01"), ("2013-01-03", "2013-01-03"),
                                                   ("2013-01-05", "2013-01-07"), ("2013-01-08", "2013-01-08")]
    # a gap in the calendar also splits a range
    assert [(g.first, g.last) for g in plan(["2013-01-01", "2013-01-03"], files(["2013-01-01", "2013-01-03"]),
                                            {}, None)] == [("2013-01-01", "2013-01-01"), ("2013-01-03", "2013-01-03")]


def test_scan_fingerprints_content_and_reuses_unchanged_files(tmp_path):
    for feed in ("schedules", "weather"):
        (tmp_path / feed).mkdir()
    (tmp_path / "schedules" / "2013-01-01.csv").write_text("a\n1\n")
    f, state = scan(str(tmp_path), {})
    assert list(f["schedules"]) == ["2013-01-01"] and f["weather"] == {} and f["outcomes"] == {}
    sha = f["schedules"]["2013-01-01"]
    os.utime(tmp_path / "schedules" / "2013-01-01.csv", ns=(time.time_ns(), time.time_ns() + 10**9))
    f, state = scan(str(tmp_path), state)
    assert f["schedules"]["2013-01-01"] == sha  # touched, same content
    (tmp_path / "schedules" / "2013-01-01.csv").write_text("a\n2\n")
    f, _ = scan(str(tmp_path), state)
    assert f["schedules"]["2013-01-01"] != sha


def test_scan_on_an_object_store_uri():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "memory://landing-scan-test"
    fs.pipe(f"{root}/schedules/2013-01-01.csv", b"a\n1\n")
    fs.pipe(f"{root}/weather/2013-01-01.csv", b"b\n2\n")
    f, state = scan(root, {})
    again, _ = scan(root, state)
    assert again == f and list(f["weather"]) == ["2013-01-01"]
    fs.pipe(f"{root}/weather/2013-01-01.csv", b"b\n9\n")
    changed, _ = scan(root, state)
    assert changed["weather"]["2013-01-01"] != f["weather"]["2013-01-01"]
