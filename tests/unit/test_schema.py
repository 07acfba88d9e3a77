"""One schema: the feeds' checks, the serving contract and the README table come from lib/schema.py."""

from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.lib import features, schema, source, validation

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_contract_the_model_enforces():
    assert schema.markdown_table() in (ROOT / "README.md").read_text()


def test_feature_lists_follow_the_schema():
    assert features.FEATURE_COLUMNS == list(schema.CATEGORICAL) + list(schema.NUMERIC)
    assert set(features.WEATHER_FEATURES) <= set(features.NUMERIC_FEATURES)


@pytest.mark.parametrize("column", list(schema.WEATHER))
def test_a_weather_reading_has_one_range_in_a_feed_and_in_a_request(column, monkeypatch):
    """Moving a bound in lib/schema.py moves it for ingestion and for serving alike: a value just
    above the bound is nulled in the feed and refused in a request; the bound itself passes both."""
    col = schema.WEATHER[column]
    day = "2013-03-01"
    feeds = source.feeds_for_day(day)
    weather = feeds["weather"].copy()
    weather[column] = weather[column].astype("float64")
    weather.loc[weather.index[0], column] = col.hi
    weather.loc[weather.index[1], column] = col.hi + 1
    data = weather.to_csv(index=False).encode()
    df, rep = validation.parse_feed("weather", data, file="w.csv", partition=day)
    assert rep.passed, rep.errors()
    assert df[column].iloc[0] == col.hi and pd.isna(df[column].iloc[1])

    X = features.examples_from_source([day])[features.FEATURE_COLUMNS].iloc[:2].reset_index(drop=True)
    X[column] = [col.hi, col.hi + 1]
    with pytest.raises(features.InputError, match=f"column '{column}': values outside"):
        features.check_scoring_input(X)
    features.check_scoring_input(X.iloc[:1])
