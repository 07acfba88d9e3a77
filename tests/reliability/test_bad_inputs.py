"""Bad landing files, dropped into the landing zone as a real upstream would send them.

For each: the ingestion step (or its blocking check) fails with a message naming the feed, the
file, the partition and the column or rows; nothing downstream materialises for that partition;
the lake keeps the previous good version of every asset's partition (or none), byte for byte;
`champion` does not move; the corrected file, re-landed, then succeeds and gives the same bytes.
"""

import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.resources import build_resources
from mlops_assets.settings import get_settings
from tests.reliability.helpers import module_home, register_model

DAY = "2013-01-05"  # ingested once before: the lake holds a good version
FRESH = "2013-01-10"  # landed but never ingested: the lake holds none
LAKE_ASSETS = ["raw_flights", "raw_weather", "flight_outcomes", "flight_features", "training_examples",
               "flight_delay_predictions"]
# What must not materialise when each ingestion asset fails (the asset graph's downstream).
DOWNSTREAM = {
    "raw_flights": {"flight_outcomes", "flight_features", "training_examples", "flight_delay_predictions"},
    "raw_weather": {"flight_features", "training_examples", "flight_delay_predictions"},
    "flight_outcomes": {"training_examples"},
}
SELECTION = [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
             features.flight_features, features.training_examples, deployment.flight_delay_predictions]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with module_home(tmp_path_factory, "badinputs", days=("2013-01-01", "2013-01-09")) as h:
        version = register_model([f"2013-01-0{d}" for d in range(1, 10)], alias="champion")
        s = get_settings()
        r = _deployed_then([deployment.flight_delay_predictions], DAY)
        assert r.success
        from mlops_assets.lib.source import replay

        replay(s.landing_uri, "2013-01-11", "2013-01-10")  # FRESH lands (schedules, weather)
        yield h, version


def _csv(df) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _frame(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def _cell(data, col, row, value):
    df = _frame(data)
    df.loc[row, col] = value
    return _csv(df)


def _larger(data):
    df = _frame(data)
    big = pd.concat([df] * (5000 // len(df) + 1), ignore_index=True).head(5000)
    big["flight"] = [str(i) for i in range(1, len(big) + 1)]
    return _csv(big)


def _truncated(data):
    cut = data.index(b"\n", len(data) // 2) + 7  # seven bytes into a data row
    return data[:cut]


# name: (feed, mutation, asset, check, fragments the message must contain)
CASES = {
    "missing_column": ("schedules", lambda d: _csv(_frame(d).drop(columns=["dest"])),
                       "raw_flights", "schema", ["column 'dest'", "missing"]),
    "wrong_type": ("schedules", lambda d: _cell(d, "distance", 3, "far"),
                   "raw_flights", "schema", ["column 'distance'", "'far'", "rows [3]"]),
    "wrong_type_weather": ("weather", lambda d: _cell(d, "temp", 2, "hot"),
                           "raw_weather", "schema", ["column 'temp'", "rows [2]"]),
    "empty_file": ("schedules", lambda d: b"", "raw_flights", "row_count", ["file is empty"]),
    "random_bytes": ("schedules", lambda d: np.random.default_rng(7).bytes(4096),
                     "raw_flights", "schema", ["not UTF-8"]),
    "truncated": ("schedules", _truncated, "raw_flights", "schema", ["truncated"]),
    "duplicate_flights": ("schedules", lambda d: _csv(pd.concat([_frame(d), _frame(d).iloc[[0]]])),
                          "raw_flights", "keys_unique", ["rows share a key", "rows [0,"]),
    "negative_distance": ("schedules", lambda d: _cell(d, "distance", 2, "-5"),
                          "raw_flights", "value_ranges", ["column 'distance'", "rows [2]"]),
    "absurd_distance": ("schedules", lambda d: _cell(d, "distance", 4, "99999"),
                        "raw_flights", "value_ranges", ["column 'distance'", "99999", "rows [4]"]),
    "dates_of_another_day": ("schedules", lambda d: _cell(d, "day", [0, 1, 2], "6"),
                             "raw_flights", "partition_dates", ["3 row(s) dated 2013-01-06", "rows [0, 1, 2]"]),
    "unknown_carrier": ("schedules", lambda d: _cell(d, "carrier", 1, "ZZ"),
                        "raw_flights", "reference_codes", ["column 'carrier'", "'ZZ'", "rows [1]"]),
    "unknown_airport": ("schedules", lambda d: _cell(d, "origin", 6, "XXX"),
                        "raw_flights", "reference_codes", ["column 'origin'", "'XXX'", "rows [6]"]),
    "outcomes_never_scheduled": ("outcomes", lambda d: _csv(pd.concat([_frame(d), _frame(d).iloc[[0]].assign(flight="9998")])),
                                 "flight_outcomes", "matches_schedule", ["never scheduled", "9998"]),
    "all_labels_missing": ("outcomes", lambda d: _csv(_frame(d).assign(arr_delay="")),
                           "flight_outcomes", "labels_present", ["column 'arr_delay'", "labels are missing: 0 of"]),
    "far_larger_than_usual": ("schedules", _larger, "raw_flights", "row_count", ["5000 data rows", "far more than usual"]),
}


def _lake_bytes(home, day):
    out = {}
    for a in LAKE_ASSETS:
        p = home / "lake" / a / f"{day}.parquet"
        out[a] = p.read_bytes() if p.exists() else None
    return out


def _champion():
    from mlops_assets.lib import registry

    mv = registry.alias_version("champion")
    return str(mv.version) if mv else None


def _deployed_then(assets, day, inst=None):
    """A fresh instance (nothing skipped as already done), where the champion is deployed first:
    the deployed version is what scores."""
    res = build_resources(get_settings())
    inst = inst or dg.DagsterInstance.ephemeral()
    assert dg.materialize([deployment.model_deployment], resources=res, instance=inst).success
    return dg.materialize(assets, resources=res, partition_key=day, raise_on_error=False, instance=inst)


def _run(day):
    return _deployed_then(SELECTION, day)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_fails_clearly_and_loses_nothing(world, case):
    home, version = world
    feed, mutate, asset, check, fragments = CASES[case]
    day = DAY
    path = home / "landing" / feed / f"{day}.csv"
    good = path.read_bytes()
    before = _lake_bytes(home, day)
    assert before["raw_flights"] is not None and before["flight_delay_predictions"] is not None
    path.write_bytes(mutate(good))
    try:
        r = _run(day)
        assert not r.success
        failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == asset
        msg = failure.event_specific_data.error.message
        for f in [f"feed '{feed}'", f"{feed}/{day}.csv", f"partition {day}", *fragments]:
            assert f in msg, (f, msg)
        evaluations = {(e.asset_key.to_user_string(), e.check_name): e
                       for e in (ev.event_specific_data for ev in r.all_events
                                 if ev.event_type_value == "ASSET_CHECK_EVALUATION")}
        assert evaluations[(asset, check)].passed is False
        # nothing downstream materialised; the lake holds the previous good version, byte for byte
        assert not {m.asset_key.to_user_string() for m in r.get_asset_materialization_events()} & DOWNSTREAM[asset]
        _assert_same_lake(_lake_bytes(home, day), before)
        assert not list((home / "lake").rglob(".*.tmp"))
        assert _champion() == version
    finally:
        path.write_bytes(good)  # the corrected file is re-landed
    r = _run(day)
    assert r.success
    _assert_same_lake(_lake_bytes(home, day), before)  # and the re-run gives the same bytes


def _assert_same_lake(after, before):
    """Every asset's partition byte-identical; predictions row-identical (a re-score of a good
    day stamps a new `scored_at`, and each run here deploys the same version anew, so its
    `deployment_run_id` differs; nothing else changes)."""
    p = "flight_delay_predictions"
    assert {a: b for a, b in after.items() if a != p} == {a: b for a, b in before.items() if a != p}
    pd.testing.assert_frame_equal(*(pd.read_parquet(io.BytesIO(x[p])).drop(columns=["scored_at", "deployment_run_id"])
                                    for x in (after, before)))


def test_bad_file_on_a_new_day_leaves_no_partition(world):
    home, version = world
    path = home / "landing" / "schedules" / f"{FRESH}.csv"
    good = path.read_bytes()
    path.write_bytes(_truncated(good))
    try:
        r = _run(FRESH)
        assert not r.success
        lake = _lake_bytes(home, FRESH)
        assert {a: lake[a] for a in {"raw_flights"} | DOWNSTREAM["raw_flights"]} == \
            {a: None for a in {"raw_flights"} | DOWNSTREAM["raw_flights"]}
        assert lake["raw_weather"] is not None  # the day's good feed is not held back
        assert _champion() == version
    finally:
        path.write_bytes(good)


def test_extra_column_is_accepted_with_a_warning(world):
    home, version = world
    path = home / "landing" / "schedules" / f"{DAY}.csv"
    good = path.read_bytes()
    before = _lake_bytes(home, DAY)
    path.write_bytes(_csv(_frame(good).assign(gate_number="B12")))
    try:
        instance = dg.DagsterInstance.ephemeral()
        r = _deployed_then(SELECTION, DAY, instance)
        assert r.success
        warnings = [e.user_message for e in instance.all_logs(r.run_id) if e.level == 30]  # logging.WARNING
        assert any("unexpected column(s) ['gate_number'] dropped" in w and f"partition {DAY}" in w for w in warnings), warnings
        mat = next(m for m in r.get_asset_materialization_events() if m.asset_key.to_user_string() == "raw_flights")
        assert mat.materialization.metadata["warnings"].value == 1
        # the column is dropped: the lake's partition is byte-identical to the good one
        _assert_same_lake(_lake_bytes(home, DAY), before)
    finally:
        path.write_bytes(good)
