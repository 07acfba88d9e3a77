"""`mlops-serve`, the scoring server the Deployment runs, as a real process on a real registered
version: it answers as the model does in batch, every request gets a 2xx or a 4xx (a fuzzer of
generated bodies, content types and sizes), `/metrics` counts exactly what happened, and what it
answered lands in `online_predictions`."""

import http.client
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from mlops_assets.lib.features import FEATURE_COLUMNS
from tests.reliability.helpers import (
    free_port,
    module_home,
    register_model,
    running_server,
)

BIN = Path(sys.executable).parent
MAX_BYTES = 300_000
# CI's share of the fuzzer; the full run: MLOPS_FUZZ_EXAMPLES=10000 pytest ...::test_fuzzed_requests...
FUZZ_EXAMPLES = int(os.environ.get("MLOPS_FUZZ_EXAMPLES", "3000"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with module_home(tmp_path_factory, "online", days=("2013-01-01", "2013-01-12")) as h:
        version = register_model([f"2013-01-{d:02d}" for d in range(1, 12)], alias="champion")
        from mlops_assets.lib.storage import Lake
        from mlops_assets.settings import get_settings

        s = get_settings()
        rows = Lake(s.lake_uri).read("flight_features", "2013-01-12")[FEATURE_COLUMNS]
        port = free_port()
        env = {**os.environ, "MLOPS_PAYLOAD_FLUSH_S": "0.2", "MLOPS_SERVING_MAX_BYTES": str(MAX_BYTES)}
        cmd = [str(BIN / "mlops-serve"), "--model-uri", "models:/flight_delay@champion", "--port", str(port)]
        with running_server(cmd, port, env, h / "serve.log") as proc:
            yield {"port": port, "proc": proc, "rows": rows, "version": version, "home": h}


def request(port, method, path, body=b"", ctype="application/json", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        h = {"Content-Type": ctype} if ctype is not None else {}
        conn.request(method, path, body=body, headers={**h, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace"), dict(r.getheaders())
    finally:
        conn.close()


def split_body(df: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(df.to_json(orient="split", index=False))}).encode()


def scrape(port) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text, _ = request(port, "GET", "/metrics", ctype=None)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def delta(after, before, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def rss(proc) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def test_it_answers_as_the_model_does_in_batch(server):
    """The same probabilities as the registered model in batch (pyfunc predict), in MLflow's
    response format, for both JSON formats and for CSV (which MLflow's own app answers)."""
    import mlflow.pyfunc

    port, rows = server["port"], server["rows"].head(50)
    batch = mlflow.pyfunc.load_model(f"models:/flight_delay/{server['version']}").predict(rows)["delay_probability"]
    records = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))}).encode()
    for body, ctype in ((split_body(rows), "application/json"), (records, "application/json; charset=utf-8"),
                        (rows.to_csv(index=False).encode(), "text/csv")):
        status, text, headers = request(port, "POST", "/invocations", body, ctype)
        assert status == 200, text
        served = [p["delay_probability"] for p in json.loads(text)["predictions"]]
        np.testing.assert_allclose(served, batch.to_numpy(), rtol=1e-9)
        assert headers["x-model-version"] == server["version"] and headers["x-request-id"]


def test_metrics_count_exactly_what_happened(server):
    port, rows = server["port"], server["rows"]
    before = scrape(port)
    served = []
    for n in (1, 1, 1, 1, 3, 3):  # 6 good requests, 10 rows
        status, text, _ = request(port, "POST", "/invocations", split_body(rows.sample(n, random_state=n + len(served))))
        assert status == 200, text
        served += [p["delay_probability"] for p in json.loads(text)["predictions"]]
    bad = rows.head(2).copy()
    bad.loc[0, "month"] = 13
    refusals = [(b"{not json", "application/json", 400), (b"", "application/json", 400),
                (b"[1, 2", "application/json", 400),  # 3 x not_json
                (split_body(bad), "application/json", 400), (split_body(bad), "application/json", 400),  # out_of_range
                (b"x" * (MAX_BYTES + 1), "application/json", 413),  # too_large
                (split_body(rows.head(1)), "text/plain", 415),  # unsupported_media_type
                (b'{"dataframe_split": {}, "dataframe_split": {}}', "application/json", 400)]  # ambiguous
    for body, ctype, expected in refusals:
        status, text, _ = request(port, "POST", "/invocations", body, ctype)
        assert status == expected, (body[:50], text)
    for _ in range(2):
        assert request(port, "GET", "/ping", ctype=None)[0] == 200
    after = scrape(port)
    assert delta(after, before, "mlops_serving_requests_total", path="/invocations", status="200") == 6
    assert delta(after, before, "mlops_serving_requests_total", path="/invocations", status="400") == 6
    assert delta(after, before, "mlops_serving_requests_total", path="/invocations", status="413") == 1
    assert delta(after, before, "mlops_serving_requests_total", path="/invocations", status="415") == 1
    assert delta(after, before, "mlops_serving_requests_total", path="/ping", status="200") == 2
    assert delta(after, before, "mlops_serving_request_duration_seconds_count", path="/invocations") == 14
    assert delta(after, before, "mlops_serving_rows_scored_total") == 10
    for reason, n in {"not_json": 3, "out_of_range": 2, "too_large": 1, "unsupported_media_type": 1,
                      "ambiguous": 1, "missing_column": 0, "wrong_type": 0}.items():
        assert delta(after, before, "mlops_serving_rejections_total", reason=reason) == n, reason
    assert delta(after, before, "mlops_serving_delay_probability_count") == 10
    assert delta(after, before, "mlops_serving_delay_probability_sum") == pytest.approx(sum(served), rel=1e-9)
    below = delta(after, before, "mlops_serving_delay_probability_bucket", le="0.5")
    assert below == sum(p <= 0.5 for p in served)
    assert after[("mlops_serving_model_info", (("model_uri", f"models:/flight_delay/{server['version']}"),
                                                ("version", server["version"])))] == 1


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(server):
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    try:
        conn.request("POST", "/invocations", body=iter([b"[" * 100_000] * 10), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 413 and "MLOPS_SERVING_MAX_BYTES" in r.read().decode()
    finally:
        conn.close()
    assert request(server["port"], "GET", "/ping", ctype=None)[0] == 200


def test_online_predictions_hold_what_was_served(server):
    """Requests with their ids, then `online_predictions` for the day: the same rows, features,
    probabilities, version and request ids."""
    import dagster as dg

    from mlops_assets.defs.deployment.online import (
        online_feature_drift,
        online_predictions,
    )
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.lib.storage import Lake
    from mlops_assets.settings import get_settings

    port, rows = server["port"], server["rows"]
    sent = {}
    for i, n in enumerate((1, 2, 3, 1)):
        rid = f"test-{os.getpid()}-{i}"
        req = rows.sample(n, random_state=100 + i).reset_index(drop=True)
        status, text, headers = request(port, "POST", "/invocations", split_body(req), headers={"X-Request-ID": rid})
        assert status == 200 and headers["x-request-id"] == rid
        sent[rid] = (req, [p["delay_probability"] for p in json.loads(text)["predictions"]])
    day = datetime.now(UTC).date().isoformat()
    s = get_settings()
    from mlops_assets.lib.payload_log import read_day

    deadline = time.time() + 30  # the server writes a batch every 0.2 s here
    while not set(sent) <= set(read_day(s.payload_log_uri, day)[0]["request_id"]) and time.time() < deadline:
        time.sleep(0.2)
    assert dg.materialize([online_predictions, online_feature_drift], resources=build_resources(s), partition_key=day,
                          instance=dg.DagsterInstance.ephemeral()).success
    table = Lake(s.lake_uri).read("online_predictions", day)
    # drift covers the online rows as feature_drift covers the batch: every feature (and the output,
    # for a version whose reference has one; this test's model has none), against the answering
    # version's reference; too few rows to alarm on
    drift = Lake(s.lake_uri).read("online_feature_drift", day)
    mine = drift[drift["model_version"] == server["version"]]
    assert set(mine["feature"]) == set(FEATURE_COLUMNS) - {"day_of_year", "month"}
    assert mine["psi"].notna().all() and (mine["psi"] >= 0).all()
    assert (mine["rows"] == (table["model_version"] == server["version"]).sum()).all() and not mine["alarm"].any()
    for rid, (req, probs) in sent.items():
        got = table[table["request_id"] == rid].sort_values("row")
        assert list(got["row"]) == list(range(len(req)))
        assert set(got["model_version"]) == {server["version"]}
        np.testing.assert_allclose(got["delay_probability"], probs, rtol=1e-12)
        pd.testing.assert_frame_equal(got[FEATURE_COLUMNS].reset_index(drop=True), req.astype(got[FEATURE_COLUMNS].dtypes),
                                      check_dtype=False)


# --- the fuzzer ---------------------------------------------------------------------------------
def test_fuzzed_requests_get_a_2xx_or_a_4xx_and_the_server_stays_well(server):
    """Generated requests (hypothesis): real rows with cells, columns, rows and formats mutated,
    arbitrary JSON, arbitrary bytes, non-JSON tokens, deep nesting, huge numbers, other content
    types and sizes past the limit. Only 2xx and 4xx may come back; afterwards the server answers
    a good request and its memory has not grown."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    port, proc, rows = server["port"], server["proc"], server["rows"]
    records = json.loads(rows.head(200).to_json(orient="records"))
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**30, max_value=10**30),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                       st.sampled_from(["EWR", "JFK", "AA", "UA", "XYZ", "", "1e3", "NaN"]))
    value = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=12)

    @st.composite
    def valid_shaped(draw):
        recs = [dict(r) for r in draw(st.lists(st.sampled_from(records), min_size=0, max_size=4))]
        for _ in range(draw(st.integers(0, 3))):
            if not recs:
                break
            r = recs[draw(st.integers(0, len(recs) - 1))]
            what = draw(st.sampled_from(["cell", "drop", "add", "null"]))
            col = draw(st.sampled_from(FEATURE_COLUMNS))
            if what == "cell":
                r[col] = draw(value)
            elif what == "drop":
                r.pop(col, None)
            elif what == "add":
                r[draw(st.text(max_size=10))] = draw(value)
            else:
                r[col] = None
        fmt = draw(st.sampled_from(["split", "records", "split_dup_col", "split_short_row", "other_key", "both"]))
        cols = list(FEATURE_COLUMNS)
        data = [[r.get(c) for c in cols] for r in recs]
        if fmt == "records":
            doc = {"dataframe_records": recs}
        elif fmt == "split_dup_col":
            doc = {"dataframe_split": {"columns": cols + [cols[0]], "data": [d + [d[0]] for d in data]}}
        elif fmt == "split_short_row":
            doc = {"dataframe_split": {"columns": cols, "data": [d[:-1] for d in data]}}
        elif fmt == "other_key":
            doc = {draw(st.sampled_from(["instances", "inputs", "params", "x"])): data}
        elif fmt == "both":
            doc = {"dataframe_split": {"columns": cols, "data": data}, "dataframe_records": recs}
        else:
            doc = {"dataframe_split": {"columns": cols, "data": data}}
        return json.dumps(doc).encode()

    specials = [
        b'{"dataframe_split": {"columns": [], "data": []}}', b"NaN", b'{"dataframe_split": NaN}',
        b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 20_000, b"1" * 5_000, b"\xff\xfe\x00", b'"\\ud800"',
        b'{"dataframe_records": [' + b"{}," * 20_000 + b"{}]}", b"x" * (MAX_BYTES + 1), b"\x00" * 100]
    special = st.sampled_from(specials)
    body = st.one_of(valid_shaped(), valid_shaped(), valid_shaped(), st.binary(max_size=300),
                     value.map(lambda v: json.dumps(v).encode()), special,
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
    ctype = st.sampled_from(["application/json"] * 6 + [
        "application/json; charset=utf-8", "application/json; charset=latin-1", "application/json; foo=bar",
        "APPLICATION/JSON", "text/csv", "text/csv; charset=latin-1", "application/vnd.apache.parquet", "text/plain", "", "multipart/form-data; boundary=x"])
    method_path = st.sampled_from([("POST", "/invocations")] * 12 + [("GET", "/invocations"), ("POST", "/ping"),
                                                                     ("POST", "/nope"), ("PUT", "/invocations")])
    seen: dict[int, int] = {}
    marks: list[int] = []  # the server's RSS (MB) every 1,000 requests
    conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=60)]
    # warm up: the largest bodies once each (the allocator's high-water mark is not a leak), and
    # every format once; then the memory is measured
    for b in specials:
        assert request(port, "POST", "/invocations", b)[0] < 500
    for b, t in ((split_body(rows.head(3)), "application/json"), (rows.head(3).to_csv(index=False).encode(), "text/csv"),
                 (rows.head(3).to_parquet(index=False), "application/vnd.apache.parquet")):
        assert request(port, "POST", "/invocations", b, t)[0] == 200
    start_rss = rss(proc)
    before = scrape(port)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=body, ctype=ctype, mp=method_path)
    def one(body, ctype, mp):
        method, path = mp
        try:
            conn[0].request(method, path, body=body, headers={"Content-Type": ctype})
            r = conn[0].getresponse()
            text = r.read()
        except (http.client.HTTPException, OSError):  # the server closed the connection: ask again on a new one
            conn[0].close()
            conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn[0].request(method, path, body=body, headers={"Content-Type": ctype})
            r = conn[0].getresponse()
            text = r.read()
        seen[r.status] = seen.get(r.status, 0) + 1
        if sum(seen.values()) % 1000 == 0:
            marks.append(round(rss(proc)))
        assert 200 <= r.status < 500, (r.status, method, path, ctype, body[:300], text[:500])
        if r.status >= 300 and path == "/invocations" and method == "POST":
            assert json.loads(text)["message"], text[:300]

    one()
    conn[0].close()
    print(f"fuzz: {sum(seen.values())} requests, statuses {dict(sorted(seen.items()))}, "
          f"server RSS {start_rss:.0f} -> {rss(proc):.0f} MB, every 1,000 requests: {marks}")
    assert sum(seen.values()) >= FUZZ_EXAMPLES and seen.get(200, 0) > 0 and seen.get(400, 0) > 0
    status, text, _ = request(port, "POST", "/invocations", split_body(rows.head(3)))
    assert status == 200 and len(json.loads(text)["predictions"]) == 3
    # memory flat: the allocator reaches its high-water marks in steps (the first ~1,000 requests
    # +30-40 MB; a CI run of 3,000 moved 370 -> 403 MB between its 2,000th and 3,000th), then stays
    # (10,000 requests: 359 MB after the first thousand, 352 at the end). Bound: 60 MB over the run,
    # which a leak of 20 KB a request would pass at 3,000 requests.
    assert rss(proc) - start_rss < 60, (start_rss, rss(proc), marks)
    # and none was answered by the parser's last resort (an exception it did not foresee)
    assert delta(scrape(port), before, "mlops_serving_rejections_total", reason="parser_error") == 0
