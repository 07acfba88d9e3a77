"""Pre-departure features and labels (no Dagster here).

``build_features`` makes one row per scheduled flight from what is known before it departs: the
schedule, the weather at the origin at the scheduled hour, the plane's age and size, the calendar
and the route.  ``build_examples`` joins a day's features with that day's outcomes (which land a
day later) and adds the label ``arr_delay > 15``.

Cancelled flights (no departure) and diverted flights (departed, never arrived) have no arrival
delay: they are kept in ``training_examples`` with ``status`` ``cancelled``/``diverted`` and a
missing label, counted in metadata, and left out of training and of live-performance metrics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from mlops_assets.lib import schema, source
from mlops_assets.lib.validation import MIN_LABELLED_FRACTION, assert_no_leakage

LABEL = "label"
CATEGORICAL_FEATURES = list(schema.CATEGORICAL)
NUMERIC_FEATURES = list(schema.NUMERIC)
FEATURE_COLUMNS = CATEGORICAL_FEATURES + NUMERIC_FEATURES
# The calendar moves by construction (a day is never in its training window): not drift.
CALENDAR_FEATURES = ["day_of_year", "month"]
DRIFT_NUMERIC_FEATURES = [c for c in NUMERIC_FEATURES if c not in CALENDAR_FEATURES]
WEATHER_FEATURES = list(schema.WEATHER)


def _hhmm_to_minutes(x: pd.Series) -> pd.Series:
    x = x.astype("float64")
    return (x // 100) * 60 + (x % 100)


def flight_ids(df: pd.DataFrame) -> pd.Series:
    return (
        pd.to_datetime(df[["year", "month", "day"]].astype("int64")).dt.strftime("%Y-%m-%d")
        + "_" + df["carrier"].astype(str) + df["flight"].astype("int64").astype(str)
        + "_" + df["origin"].astype(str) + "_" + df["sched_dep_time"].astype("int64").astype(str).str.zfill(4)
    )


def build_features(schedules: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame) -> pd.DataFrame:
    """One row per scheduled flight, pre-departure columns only."""
    assert_no_leakage(schedules.columns)
    s = schedules.copy()
    when = pd.to_datetime(s[["year", "month", "day"]].astype("int64"))
    out = pd.DataFrame({
        "flight_id": flight_ids(s),
        "date": when.dt.strftime("%Y-%m-%d"),
    })
    for c in source.KEY_COLUMNS:
        out[c] = s[c].to_numpy()
    out["carrier"] = s["carrier"].astype(str).to_numpy()
    out["origin"] = s["origin"].astype(str).to_numpy()
    out["dest"] = s["dest"].astype(str).to_numpy()
    dep_min = _hhmm_to_minutes(s["sched_dep_time"])
    arr_min = _hhmm_to_minutes(s["sched_arr_time"])
    out["sched_dep_hour"] = (dep_min / 60.0).to_numpy()
    out["sched_arr_hour"] = (arr_min / 60.0).to_numpy()
    out["sched_duration_min"] = ((arr_min - dep_min) % 1440).to_numpy()
    out["distance"] = s["distance"].astype("float64").to_numpy()
    out["day_of_week"] = when.dt.dayofweek.astype("float64").to_numpy()
    out["day_of_year"] = when.dt.dayofyear.astype("float64").to_numpy()
    out["month"] = when.dt.month.astype("float64").to_numpy()

    p = planes[["tailnum", "year", "seats", "engines"]].drop_duplicates("tailnum")
    p = p.rename(columns={"year": "plane_year", "seats": "plane_seats", "engines": "plane_engines"})
    joined = s[["tailnum", "year"]].merge(p, on="tailnum", how="left", validate="many_to_one")
    out["plane_age"] = (joined["year"].astype("float64") - joined["plane_year"].astype("float64")).to_numpy()
    out["plane_seats"] = joined["plane_seats"].astype("float64").to_numpy()
    out["plane_engines"] = joined["plane_engines"].astype("float64").to_numpy()

    # Weather at the origin at the scheduled hour (time_hour is the scheduled hour, in UTC).
    w = weather.copy()
    w["time_hour"] = pd.to_datetime(w["time_hour"], utc=True)
    w = w.drop_duplicates(["origin", "time_hour"])[["origin", "time_hour"] + WEATHER_FEATURES]
    key = pd.DataFrame({"origin": s["origin"].astype(str).to_numpy(),
                        "time_hour": pd.to_datetime(s["time_hour"], utc=True).to_numpy()})
    key["time_hour"] = pd.to_datetime(key["time_hour"], utc=True)
    wj = key.merge(w, on=["origin", "time_hour"], how="left", validate="many_to_one")
    for c in WEATHER_FEATURES:
        out[c] = wj[c].astype("float64").to_numpy()

    # Congestion known from the schedule itself.
    hour = s["hour"].astype("int64").to_numpy()
    grp = pd.DataFrame({"origin": out["origin"], "hour": hour})
    out["origin_hour_departures"] = grp.groupby(["origin", "hour"])["hour"].transform("size").astype("float64").to_numpy()
    out["origin_day_departures"] = grp.groupby("origin")["hour"].transform("size").astype("float64").to_numpy()

    assert_no_leakage(out.columns)
    return out.reset_index(drop=True)


class ExamplesError(ValueError):
    """Outcomes that cannot become labels; ``check`` names the asset check that fails."""

    def __init__(self, message: str, check: str):
        super().__init__(message)
        self.check = check


def build_examples(features: pd.DataFrame, outcomes: pd.DataFrame, *, partition: str = "", file: str = "") -> pd.DataFrame:
    """Join a day's features with its outcomes; adds ``status``, ``arr_delay`` and ``label``."""
    where = f"partition {partition}" + (f", file {file}" if file else "")
    o = outcomes.copy()
    o_ids = flight_ids(o)
    unknown = ~o_ids.isin(set(features["flight_id"]))
    if unknown.any():
        rows = [int(i) for i in np.flatnonzero(unknown.to_numpy())[:10]]
        raise ExamplesError(
            f"feed 'outcomes', {where}: {int(unknown.sum())} outcome(s) for flights that were never "
            f"scheduled (columns {source.KEY_COLUMNS}), e.g. {o_ids[unknown].iloc[0]} (rows {rows})",
            check="outcomes_match_schedule",
        )
    o = pd.DataFrame({
        "flight_id": o_ids.to_numpy(),
        "departed": o["dep_time"].notna().to_numpy(),
        "arr_delay": o["arr_delay"].astype("float64").to_numpy(),
    })
    ex = features.merge(o, on="flight_id", how="left", validate="one_to_one")
    status = np.where(ex["departed"].isna(), "no_outcome",
                      np.where(ex["departed"] != True, "cancelled",  # noqa: E712 (object column)
                               np.where(ex["arr_delay"].isna(), "diverted", "arrived")))
    ex["status"] = status
    ex[LABEL] = np.where(status == "arrived", (ex["arr_delay"] > 15).astype("float64"), np.nan)
    ex = ex.drop(columns=["departed"])
    # Real days can cancel half their flights (2013-02-08/09, a blizzard); what never happens is
    # departed flights without an arrival delay (diverted: ~0.3%) or a day with no label at all.
    departed = ex["status"].isin(["arrived", "diverted"])
    n_dep = int(departed.sum())
    arrived_share = float((ex["status"] == "arrived").sum()) / n_dep if n_dep else 0.0
    if ex[LABEL].notna().sum() == 0 or arrived_share < MIN_LABELLED_FRACTION:
        raise ExamplesError(
            f"feed 'outcomes', {where}, column 'arr_delay': labels are missing: {int(ex[LABEL].notna().sum())} of "
            f"{len(ex)} scheduled flights ({n_dep} departed) have an arrival delay (expected at least "
            f"{MIN_LABELLED_FRACTION:.0%} of departed flights)",
            check="labels_present",
        )
    return ex


def examples_from_source(days) -> pd.DataFrame:
    """Examples of ``days`` built straight from the bundled data, without the landing zone or
    the lake: for a notebook, a test or a benchmark."""
    planes = source.load_reference("planes")
    out = []
    for day in days:
        feeds = source.feeds_for_day(day)
        f = build_features(feeds["schedules"], feeds["weather"], planes)
        out.append(build_examples(f, feeds["outcomes"], partition=day))
    return pd.concat(out, ignore_index=True)


class InputError(ValueError):
    """Rows given to a model do not meet its input contract. ``problems``: (reason, message) pairs;
    the reasons are few and fixed (``REASONS``), for counting rejections."""

    REASONS = ("missing_column", "unexpected_column", "no_rows", "too_many_rows", "wrong_type",
               "missing_value", "not_finite", "out_of_range", "malformed_code")

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(m for _, m in self.problems))

    @property
    def reasons(self) -> list[str]:
        return sorted({r for r, _ in self.problems})


# The input contract of a registered model (lib/schema.py): numeric feature -> (low, high, missing
# allowed); categorical feature -> the pattern of a valid code.
NUMERIC_CONTRACT: dict[str, tuple[float, float, bool]] = schema.numeric_contract()
CATEGORICAL_CONTRACT = schema.CATEGORICAL_CONTRACT


class ScoringInput(NamedTuple):
    """Rows that passed the input contract, as the arrays the check built."""

    cats: list[np.ndarray]  # one object array (all str) per CATEGORICAL_FEATURES column
    nums: np.ndarray  # float64, rows x NUMERIC_FEATURES

    def cat_matrix(self) -> np.ndarray:
        return np.column_stack(self.cats)

    def frame(self) -> pd.DataFrame:
        """The rows as ``feature_matrix`` would give them (str codes, float64 numbers), without
        copying the numbers again."""
        X = pd.DataFrame(self.nums, columns=NUMERIC_FEATURES, copy=False)
        for i, col in enumerate(CATEGORICAL_FEATURES):
            X.insert(i, col, self.cats[i])
        return X


def _rows(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    return f"rows {idx[:10].tolist()}{' ...' if len(idx) > 10 else ''}"


def check_scoring_input(df: pd.DataFrame, *, allow_extra_columns: bool = True,
                        max_rows: int | None = None) -> ScoringInput:
    """Raise :class:`InputError` naming the columns and rows that break the input contract:
    missing (or, when not allowed, unexpected) columns, too many rows, values of the wrong type,
    missing where required, not finite, or out of range. Vectorised: 1M rows in ~0.1 s.

    Returns the checked rows as the arrays the check has built anyway: the categorical features
    (object) and the numeric ones (float64), each in feature order."""
    cols = [str(c) for c in df.columns]
    problems = []
    missing = [c for c in FEATURE_COLUMNS if c not in cols]
    if missing:
        problems.append(("missing_column", f"missing column(s) {missing}"))
    extra = [c for c in cols if c not in FEATURE_COLUMNS]
    if extra and not allow_extra_columns:
        problems.append(("unexpected_column", f"unexpected column(s) {extra[:10]}; expected exactly {FEATURE_COLUMNS}"))
    if len(df) == 0:
        problems.append(("no_rows", "no rows"))
    if max_rows is not None and len(df) > max_rows:
        problems.append(("too_many_rows", f"{len(df)} rows, more than the {max_rows} allowed per request"))
    if problems:
        raise InputError(problems)
    cats = [df[col].to_numpy(object) for col in CATEGORICAL_FEATURES]  # (no copy for object columns)
    _check_codes(cats, problems)
    numeric = []
    dtypes = dict(zip(cols, df.dtypes))  # one lookup per column (df[col] costs ~10 us each)
    for col in NUMERIC_CONTRACT:
        dt = dtypes[col]
        if isinstance(dt, np.dtype) and dt.kind in "iuf":  # (the common case, decided cheaply)
            numeric.append(col)
        elif pd.api.types.is_bool_dtype(dt) or pd.api.types.is_complex_dtype(dt) or not (
                pd.api.types.is_numeric_dtype(dt) or dt == object):
            problems.append(("wrong_type", f"column {col!r}: values must be numbers, got {dt}"))
        elif dt == object:
            s = df[col]
            is_num = s.map(lambda v: v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)))
            if is_num.all():
                numeric.append(col)
            else:
                problems.append(("wrong_type", f"column {col!r}: values must be numbers, e.g. {s[~is_num].iloc[0]!r} "
                                               f"({_rows(~is_num.to_numpy(bool))})"))
        else:
            numeric.append(col)
    if numeric:  # one 2-D pass over all numeric columns
        if len(df) <= 64 and all(isinstance(dtypes[c], np.dtype) for c in numeric):
            # a request: through one object array (10 us) rather than pandas' column take (90 us);
            # every value is a number or None here (checked above), None becomes NaN
            V = df.to_numpy()[:, [cols.index(c) for c in numeric]].astype("float64")
        elif any(dtypes[c] == object for c in numeric):
            V = df[numeric].apply(pd.to_numeric, errors="coerce").to_numpy("float64")
        else:
            V = df[numeric].to_numpy("float64")
        _check_ranges(V, numeric, problems)
    if problems:
        raise InputError(problems)
    return ScoringInput(cats, V)


def _check_codes(cats: list[np.ndarray], problems: list) -> None:
    """Each categorical column: strings only, each matching its pattern."""
    import re

    for j, (col, pattern) in enumerate(CATEGORICAL_CONTRACT.items()):
        s = cats[j]
        try:
            uniques = pd.unique(s)  # check each distinct value once (a None or NaN is one too)
        except TypeError:  # an unhashable value (a list, a dict): not a code
            uniques = [None]
        if not all(isinstance(u, str) for u in uniques):
            bad = np.array([not isinstance(v, str) for v in s], dtype=bool)
            problems.append(("wrong_type", f"column {col!r}: values must be strings, not missing ({_rows(bad)})"))
            continue
        wrong = {u for u in uniques if not re.match(pattern, u)}
        if wrong:
            problems.append(("malformed_code", f"column {col!r}: malformed code(s) {sorted(wrong)[:5]} "
                                               f"({_rows(pd.Series(s).isin(wrong).to_numpy())})"))


def _check_ranges(V: np.ndarray, numeric: list[str], problems: list) -> None:
    """The numeric matrix (columns ``numeric``): in range, finite, missing only where allowed."""
    lo, hi, nullable = (np.array([NUMERIC_CONTRACT[c][i] for c in numeric]) for i in range(3))
    nullable = nullable.astype(bool)
    # As few passes over the matrix as the good case needs (1M rows: 21M values per pass):
    # in range (NaN and infinity are not), else missing where allowed. Details only if not.
    with np.errstate(invalid="ignore"):
        ok = (V >= lo) & (V <= hi)
    if ok.all():
        return
    nan = np.isnan(V)
    ok |= nan & nullable
    if ok.all():
        return
    inf = np.isinf(V)
    with np.errstate(invalid="ignore"):
        out = ~nan & ~inf & ((V < lo) | (V > hi))
    missing = nan & ~nullable
    for j, col in enumerate(numeric):
        if missing[:, j].any():
            problems.append(("missing_value", f"column {col!r}: required values are missing ({_rows(missing[:, j])})"))
        if inf[:, j].any():
            problems.append(("not_finite", f"column {col!r}: values must be finite ({_rows(inf[:, j])})"))
        if out[:, j].any():
            problems.append(("out_of_range", f"column {col!r}: values outside [{lo[j]:g}, {hi[j]:g}], "
                                             f"e.g. {V[out[:, j], j][0]} ({_rows(out[:, j])})"))


_NUMBER = (int, float)


def check_scoring_rows(columns, data, *, max_rows: int | None = None) -> ScoringInput:
    """The contract check of :func:`check_scoring_input` for rows as a JSON request holds them
    (MLflow's ``dataframe_split``: column names and a list of rows), without building a DataFrame:
    exactly the feature columns (any order, each once), rows of that many values, strings for
    codes and numbers (or null where missing is allowed) for the rest. A JSON ``true`` is not a
    number and ``"5"`` is not one either: nothing is coerced."""
    problems: list[tuple[str, str]] = []
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError([("wrong_type", "'columns' must be a list of column names")])
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        problems.append(("unexpected_column", f"column(s) {dup[:10]} given more than once"))
    missing = [c for c in FEATURE_COLUMNS if c not in columns]
    if missing:
        problems.append(("missing_column", f"missing column(s) {missing}"))
    extra = [c for c in columns if c not in FEATURE_COLUMNS]
    if extra:
        problems.append(("unexpected_column", f"unexpected column(s) {extra[:10]}; expected exactly {FEATURE_COLUMNS}"))
    if not isinstance(data, list):
        problems.append(("wrong_type", "'data' must be a list of rows"))
    elif not data:
        problems.append(("no_rows", "no rows"))
    elif max_rows is not None and len(data) > max_rows:
        problems.append(("too_many_rows", f"{len(data)} rows, more than the {max_rows} allowed per request"))
    if problems:
        raise InputError(problems)
    width = len(columns)
    bad = [i for i, r in enumerate(data) if not isinstance(r, list) or len(r) != width]
    if bad:
        raise InputError([("wrong_type", f"each row must be a list of {width} values ({_rows(np.isin(np.arange(len(data)), bad))})")])
    at = {c: i for i, c in enumerate(columns)}
    cats = []
    for c in CATEGORICAL_FEATURES:
        arr = np.empty(len(data), dtype=object)  # element by element: a list value stays one value
        for k, r in enumerate(data):
            arr[k] = r[at[c]]
        cats.append(arr)
    _check_codes(cats, problems)
    idx = [at[c] for c in NUMERIC_FEATURES]
    rows = [[r[i] for i in idx] for r in data]
    for j, col in enumerate(NUMERIC_FEATURES):
        wrong = [k for k, r in enumerate(rows) if not (r[j] is None or type(r[j]) in _NUMBER)]
        if wrong:
            problems.append(("wrong_type", f"column {col!r}: values must be numbers, e.g. {rows[wrong[0]][j]!r} "
                                           f"({_rows(np.isin(np.arange(len(rows)), wrong))})"))
    if problems:
        raise InputError(problems)
    try:
        V = np.array(rows, dtype="float64")  # null -> NaN
    except OverflowError:
        raise InputError([("out_of_range", "a number is too large to be a float")]) from None
    _check_ranges(V, NUMERIC_FEATURES, problems)
    if problems:
        raise InputError(problems)
    return ScoringInput(cats, V)


def feature_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """The columns a model sees, in a fixed order; refuses leakage columns."""
    X = df[FEATURE_COLUMNS]
    assert_no_leakage(X.columns)
    # one pass that copies each column once (selecting, then copying, then casting copied twice)
    return X.astype({**{c: str for c in CATEGORICAL_FEATURES}, **{c: "float64" for c in NUMERIC_FEATURES}})
