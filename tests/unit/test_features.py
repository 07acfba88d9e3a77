import pytest

from mlops_assets.lib import features, source, validation


@pytest.fixture(scope="module")
def day():
    feeds = source.feeds_for_day("2013-01-15")
    planes = source.load_reference("planes")
    return feeds, planes


def test_feature_columns_never_include_leakage():
    assert not set(features.FEATURE_COLUMNS) & set(validation.LEAKAGE_COLUMNS)
    assert {"dep_delay", "dep_time", "arr_time", "air_time", "arr_delay"} <= set(validation.LEAKAGE_COLUMNS)


def test_build_features_refuses_a_schedule_with_post_departure_columns(day):
    feeds, planes = day
    leaky = feeds["schedules"].assign(dep_delay=5.0)
    with pytest.raises(ValueError, match="leakage.*dep_delay"):
        features.build_features(leaky, feeds["weather"], planes)


def test_feature_matrix_of_examples_drops_the_outcome_columns(day):
    feeds, planes = day
    f = features.build_features(feeds["schedules"], feeds["weather"], planes)
    ex = features.build_examples(f, feeds["outcomes"], partition="2013-01-15")
    assert "arr_delay" in ex.columns  # the examples carry the outcome...
    X = features.feature_matrix(ex)
    assert list(X.columns) == features.FEATURE_COLUMNS  # ...the model never sees it
    assert not set(X.columns) & set(validation.LEAKAGE_COLUMNS)
    with pytest.raises(ValueError, match="leakage"):
        validation.assert_no_leakage(list(X.columns) + ["air_time"])


def test_features_one_row_per_flight_with_weather_and_planes(day):
    feeds, planes = day
    f = features.build_features(feeds["schedules"], feeds["weather"], planes)
    assert len(f) == len(feeds["schedules"]) and f["flight_id"].is_unique
    assert f["temp"].notna().mean() > 0.9  # weather at the scheduled hour found for most flights
    assert f["plane_age"].notna().mean() > 0.5
    # A departure scheduled at HHMM has sched_dep_hour HH + MM/60.
    row = f.loc[f["sched_dep_time"] % 100 != 0].iloc[0]
    hhmm = int(row["sched_dep_time"])
    assert row["sched_dep_hour"] == pytest.approx(hhmm // 100 + (hhmm % 100) / 60)


def test_examples_label_and_cancellations(day):
    feeds, planes = day
    f = features.build_features(feeds["schedules"], feeds["weather"], planes)
    ex = features.build_examples(f, feeds["outcomes"], partition="2013-01-15")
    o = feeds["outcomes"]
    arrived = ex["status"] == "arrived"
    assert (ex.loc[arrived, "label"] == (ex.loc[arrived, "arr_delay"] > 15).astype(float)).all()
    assert ex.loc[~arrived, "label"].isna().all()
    assert int((ex["status"] == "cancelled").sum()) == int(o["dep_time"].isna().sum())


def test_outcomes_for_unscheduled_flights_are_refused(day):
    feeds, planes = day
    f = features.build_features(feeds["schedules"], feeds["weather"], planes)
    o = feeds["outcomes"].copy()
    o.loc[0, "flight"] = 9999
    with pytest.raises(features.ExamplesError, match="never scheduled"):
        features.build_examples(f, o, partition="2013-01-15")


def test_all_labels_missing_is_refused(day):
    feeds, planes = day
    f = features.build_features(feeds["schedules"], feeds["weather"], planes)
    o = feeds["outcomes"].assign(arr_delay=float("nan"))
    with pytest.raises(features.ExamplesError, match="labels are missing"):
        features.build_examples(f, o, partition="2013-01-15")


def test_a_blizzard_day_with_most_flights_cancelled_is_real_data_not_missing_labels():
    feeds = source.feeds_for_day("2013-02-09")  # winter storm Nemo: over half cancelled
    f = features.build_features(feeds["schedules"], feeds["weather"], source.load_reference("planes"))
    ex = features.build_examples(f, feeds["outcomes"], partition="2013-02-09")
    assert (ex["status"] == "cancelled").mean() > 0.5
    assert ex["label"].notna().sum() > 100


def test_scoring_input_contract(day):
    from mlops_assets.lib.features import FEATURE_COLUMNS, InputError, check_scoring_input

    feeds, planes = day
    feats = features.build_features(feeds["schedules"], feeds["weather"], planes)
    check_scoring_input(feats)  # real rows pass, with their id columns
    X = feats[FEATURE_COLUMNS].head(20).reset_index(drop=True)
    check_scoring_input(X, allow_extra_columns=False, max_rows=20)
    cases = [
        (lambda d: d.assign(gate="B1"), {"allow_extra_columns": False}, "unexpected column(s) ['gate']"),
        (lambda d: d.drop(columns=["distance"]), {}, "missing column(s) ['distance']"),
        (lambda d: d, {"max_rows": 5}, "20 rows, more than the 5 allowed"),
        (lambda d: d.head(0), {}, "no rows"),
        (lambda d: d.assign(distance=d["distance"].astype(object).where(d.index != 3, "far")), {},
         "column 'distance': values must be numbers, e.g. 'far' (rows [3])"),
        (lambda d: d.assign(month=True), {}, "column 'month': values must be numbers"),
        (lambda d: d.assign(carrier=d["carrier"].where(d.index != 2, None)), {}, "column 'carrier': values must be strings, not missing (rows [2])"),
        (lambda d: d.assign(origin=d["origin"].where(d.index != 4, "XXX")), {}, "column 'origin': malformed code(s) ['XXX'] (rows [4])"),
        (lambda d: d.assign(distance=d["distance"].where(d.index != 1)), {}, "column 'distance': required values are missing (rows [1])"),
        (lambda d: d.assign(temp=d["temp"].where(d.index != 5, float("inf"))), {}, "column 'temp': values must be finite (rows [5])"),
        (lambda d: d.assign(month=d["month"].where(d.index != 6, 13)), {}, "column 'month': values outside [1, 12], e.g. 13.0 (rows [6])"),
    ]
    for mutate, kw, message in cases:
        with pytest.raises(InputError) as e:
            check_scoring_input(mutate(X.copy()), **kw)
        assert message in str(e.value), (message, str(e.value))
    # missing weather is allowed (a sensor gap), it is imputed
    check_scoring_input(X.assign(temp=float("nan")))
