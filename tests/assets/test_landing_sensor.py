"""The landing sensor against a history someone else materialised: turned on over a backfilled
lake it requests nothing (the files' identity lives with the materialisations, not in its
cursor); a re-written file then requests exactly its day, and only the assets that depend on it;
many days landing at once become one range run."""

import json

import dagster as dg
import pandas as pd
import pytest

from tests.helpers import range_tags
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.ingestion.sensors import landing_zone_sensor
from mlops_assets.defs.resources import build_resources
from mlops_assets.lib.source import replay
from mlops_assets.settings import get_settings

DATA = [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
        features.flight_features, features.training_examples]




def tick(instance, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(get_settings()))
    result = landing_zone_sensor(ctx)
    return result, result.cursor


def summary(requests):
    out = []
    for r in requests:
        first = r.partition_key or r.tags["dagster/asset_partition_range_start"]
        last = r.partition_key or r.tags["dagster/asset_partition_range_end"]
        out.append((first, last, tuple(k.to_user_string() for k in r.asset_selection)))
    return out


@pytest.fixture
def backfilled(home):
    s = get_settings()
    replay(s.landing_uri, "2013-01-10", "2013-01-01")
    with dg.instance_for_test() as instance:
        res = build_resources(s)
        # the history as a CLI range backfill leaves it: 01-01..01-09 with labels, 01-10 without
        assert dg.materialize(DATA, resources=res, instance=instance, tags=range_tags("2013-01-01", "2013-01-09")).success
        assert dg.materialize(DATA[:2] + [DATA[3]], resources=res, instance=instance, partition_key="2013-01-10").success
        yield s, instance, res


def test_sensor_turned_on_over_a_backfilled_history_requests_nothing(backfilled):
    import os
    import time

    s, instance, res = backfilled
    result, cursor = tick(instance)
    assert list(result.run_requests or []) == [], summary(result.run_requests)
    # and a re-written file requests exactly its day, with only what depends on that feed
    path = f"{s.landing_uri}/weather/2013-01-05.csv"
    weather = pd.read_csv(path)
    weather.loc[0, "temp"] = weather.loc[0, "temp"] + 1.0
    weather.to_csv(path, index=False)
    result, cursor = tick(instance, cursor)
    assert summary(result.run_requests) == [
        ("2013-01-05", "2013-01-05", ("raw_weather", "flight_features", "training_examples"))]
    (req,) = result.run_requests
    # while its run is still to come, the day is not asked again
    again, cursor = tick(instance, cursor)
    assert not again.run_requests and json.loads(cursor)["pending"]["2013-01-05"]["key"] == req.run_key
    selected = [a for a in DATA if a.key in set(req.asset_selection)]
    assert dg.materialize(selected, resources=res, instance=instance, partition_key="2013-01-05",
                          tags={**req.tags, "dagster/run_key": req.run_key}).success  # as the daemon runs it
    # once it has run: nothing, and a touched but unchanged file asks nothing either
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    result, cursor = tick(instance, cursor)
    assert not result.run_requests, summary(result.run_requests)
    assert json.loads(cursor)["pending"] == {}


def test_days_landing_at_once_become_range_runs(backfilled):
    s, instance, _ = backfilled
    _, cursor = tick(instance)
    replay(s.landing_uri, "2013-01-17", "2013-01-11", outcomes_from="2013-01-10")  # an outage's catch-up
    result, _ = tick(instance, cursor)
    ingest = ("raw_flights", "raw_weather", "flight_features")
    labels = ("flight_outcomes", "training_examples")
    assert summary(result.run_requests) == [
        ("2013-01-10", "2013-01-10", labels), ("2013-01-11", "2013-01-16", ingest + labels),
        ("2013-01-17", "2013-01-17", ingest)]
    rr = result.run_requests[1]
    assert rr.partition_key is None and rr.run_key.startswith("2013-01-11..2013-01-16:")


def test_a_failed_range_is_retried_day_by_day(backfilled):
    s, instance, res = backfilled
    _, cursor = tick(instance)
    replay(s.landing_uri, "2013-01-14", "2013-01-11", outcomes_from="2013-01-10")
    sched = pd.read_csv(f"{s.landing_uri}/schedules/2013-01-12.csv").drop(columns=["dest"])
    sched.to_csv(f"{s.landing_uri}/schedules/2013-01-12.csv", index=False)  # one bad day in the range

    def run(req):  # as the daemon would run the request
        selected = [a for a in DATA if a.key in set(req.asset_selection)]
        tags = {**req.tags, "dagster/run_key": req.run_key}
        if req.partition_key:
            return dg.materialize(selected, resources=res, instance=instance, raise_on_error=False,
                                  partition_key=req.partition_key, tags=tags)
        return dg.materialize(selected, resources=res, instance=instance, raise_on_error=False, tags=tags)

    ranges_failed = 0
    for _ in range(4):
        result, cursor = tick(instance, cursor)
        got = summary(result.run_requests)
        spans = [(a, b) for a, b, _ in got]
        if ("2013-01-12", "2013-01-12") in spans:
            break
        (req,) = [r for r, (a, b) in zip(result.run_requests, spans) if a <= "2013-01-12" <= b]
        assert not run(req).success  # the range holding the bad day fails
        ranges_failed += 1
    # then the range is asked again one day at a time: the good days go through, the bad one fails alone
    assert ranges_failed == 1, ranges_failed
    assert {("2013-01-11", "2013-01-11"), ("2013-01-12", "2013-01-12"), ("2013-01-13", "2013-01-13")} <= set(spans)
    for r in result.run_requests:
        assert run(r).success == (r.partition_key != "2013-01-12")
    result, _ = tick(instance, cursor)
    assert not result.run_requests  # the bad day waits for its file to change: no retry loop
