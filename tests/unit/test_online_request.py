"""Reading an online request (lib/online_request.py) and scoring requests together (lib/micro_batch.py),
without a server."""

import asyncio
import json

import numpy as np
import pytest

from mlops_assets.lib import features
from mlops_assets.lib.features import FEATURE_COLUMNS
from mlops_assets.lib.micro_batch import MicroBatcher
from mlops_assets.lib.online_request import Refused, parse_json_body


@pytest.fixture(scope="module")
def rows():
    return features.examples_from_source(["2013-03-01"])[FEATURE_COLUMNS].head(20).reset_index(drop=True)


def split(df, **extra):
    return json.dumps({"dataframe_split": {**json.loads(df.to_json(orient="split", index=False)), **extra}}).encode()


def refused(body, reason, max_rows=100):
    with pytest.raises(Refused) as e:
        parse_json_body(body, max_rows)
    assert reason in e.value.reasons and e.value.status == 400, (e.value.reasons, str(e.value))
    return str(e.value)


def test_both_json_formats_give_the_frame_check_s_rows(rows):
    want = features.check_scoring_input(rows)
    records = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))}).encode()
    for body in (split(rows), records):
        got = parse_json_body(body, 100)
        assert all((a == b).all() for a, b in zip(got.cats, want.cats))
        np.testing.assert_allclose(got.nums, want.nums, rtol=1e-9, equal_nan=True)


def test_what_is_ambiguous_is_refused(rows):
    one = json.loads(rows.head(1).to_json(orient="records"))[0]
    refused(b'{"dataframe_split": {}, "dataframe_split": {}}', "ambiguous")
    refused(json.dumps({"dataframe_records": [one], "params": {}}).encode(), "ambiguous")
    del one["temp"]  # an absent key is not a missing value
    assert "never an absent key" in refused(json.dumps({"dataframe_records": [one]}).encode(), "missing_column")
    refused(json.dumps({"instances": [[1, 2]]}).encode(), "unsupported_format")
    refused(b"[1, 2", "not_json")
    refused(b"\xff\xfe", "not_json")
    refused(b"[" * 100_000, "not_json")


def test_values_are_never_coerced(rows):
    df = rows.head(2).astype(object)
    for col, value, reason in (("distance", "1000", "wrong_type"), ("distance", True, "wrong_type"),
                               ("carrier", 7, "wrong_type"), ("carrier", ["AA"], "wrong_type"),
                               ("month", 13, "out_of_range"), ("distance", None, "missing_value"),
                               ("origin", "XYZ", "malformed_code")):
        bad = df.copy()
        bad.at[0, col] = value
        body = json.dumps({"dataframe_split": {"columns": list(bad.columns), "data": bad.values.tolist()}}).encode()
        refused(body, reason)


def test_nan_is_missing_and_infinity_is_refused(rows):
    data = json.loads(rows.head(1).to_json(orient="split", index=False))
    data["data"][0][FEATURE_COLUMNS.index("temp")] = float("nan")  # json.dumps writes the NaN token
    ok = parse_json_body(json.dumps({"dataframe_split": data}).encode(), 100)
    assert np.isnan(ok.nums[0, features.NUMERIC_FEATURES.index("temp")])
    data["data"][0][FEATURE_COLUMNS.index("temp")] = float("inf")
    refused(json.dumps({"dataframe_split": data}).encode(), "not_finite")
    data["data"][0][FEATURE_COLUMNS.index("temp")] = None
    data["data"][0][FEATURE_COLUMNS.index("distance")] = float("nan")  # required: missing is refused
    refused(json.dumps({"dataframe_split": data}).encode(), "missing_value")


def test_the_row_limit(rows):
    refused(split(rows), "too_many_rows", max_rows=10)


def test_requests_scored_together_each_get_their_own_answers(rows):
    """Concurrent requests share one model call and each gets exactly its rows' probabilities."""
    calls = []

    def score(r):
        calls.append(len(r.nums))
        return r.nums[:, features.NUMERIC_FEATURES.index("distance")].copy()  # an answer that identifies the row

    batcher = MicroBatcher(score)
    sizes = [1, 3, 2, 1, 5]
    parts, start = [], 0
    for n in sizes:
        parts.append(features.check_scoring_input(rows.iloc[start:start + n]))
        start += n

    async def main():
        return await asyncio.gather(*(batcher(p) for p in parts))

    answers = asyncio.run(main())
    assert calls == [sum(sizes)]  # one call for all five
    for p, a in zip(parts, answers):
        np.testing.assert_array_equal(a, p.nums[:, features.NUMERIC_FEATURES.index("distance")])
