"""Ingestion: the landing zone's daily feeds, typed and validated, into the lake.

Each asset validates every day of its partition (or partition range) *before* writing anything:
one bad file fails the step with a message naming the feed, file, partition and column, and the
lake keeps the previous good version of every partition.  The validation is reported as blocking
asset checks, so nothing downstream runs after a failure.
"""


import dagster as dg

from mlops_assets.defs.common import OWNERS, check_specs, fail_with_checks, passed_checks, record_inputs
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import daily_partitions, single_run, window_days
from mlops_assets.defs.resources import LakeStorage, LandingZone
from mlops_assets.lib.checks import FEED_CHECKS
from mlops_assets.settings import get_settings

CHECK_DESCRIPTIONS = {
    "schema": "required columns present and typed; unexpected columns dropped with a warning",
    "row_count": "a non-empty file, not far larger than usual",
    "partition_dates": "every row belongs to the partition's day",
    "keys_unique": "no duplicate keys",
    "value_ranges": "values within physical/business ranges",
    "reference_codes": "carrier, airport codes known",
    "no_leakage_columns": "no column known only after departure",
    "labels_present": "at least half of the departed flights have an arrival delay (the label)",
    "matches_schedule": "every outcome belongs to a flight in the day's schedule (raw_flights)",
}


def _ingestion_asset(name: str, feed: str, description: str, deps=()):
    checks = FEED_CHECKS[feed]

    @dg.asset(
        name=name,
        group_name="ingestion",
        partitions_def=daily_partitions,
        backfill_policy=single_run,
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        description=description,
        check_specs=check_specs(name, checks, CHECK_DESCRIPTIONS),
        # sized from bench/step_memory.py: a year in one run peaks at 299 MiB (tests/k8s/test_step_sizes.py)
        op_tags={"mlops/step": "ingestion", **cpu_step_tags("small")},
        deps=list(deps),
    )
    def _asset(context: dg.AssetExecutionContext, landing: LandingZone, lake: LakeStorage):
        import pandas as pd

        from mlops_assets.lib.source import KEY_COLUMNS, feed_key
        from mlops_assets.lib.storage import digest, sha256
        from mlops_assets.lib.validation import parse_feed, reference_codes

        loc, lk = landing.location(), lake.lake()
        reference, ref_sha = None, ""
        if feed == "schedules":
            ref_key = "reference/airlines.csv"
            if loc.exists(ref_key):
                import io

                ref_bytes = loc.read_bytes(ref_key)
                reference, ref_sha = reference_codes(pd.read_csv(io.BytesIO(ref_bytes))), sha256(ref_bytes)
        days = window_days(context)
        code = get_settings().code_version
        parsed, errors, warnings, inputs = {}, {}, [], {}
        for day in days:
            key = feed_key(feed, day)
            data = loc.read_bytes(key) if loc.exists(key) else None
            scheduled, sched_sha = None, ""
            if feed == "outcomes" and lk.has("raw_flights", day):
                scheduled, sched_sha = lk.read_fp("raw_flights", day, columns=KEY_COLUMNS)
            src = sha256(data) if data is not None else ""
            inputs[day] = {"source_sha256": src, "input_fingerprint": digest(src, ref_sha, sched_sha, code)}
            df, rep = parse_feed(feed, data, file=loc.describe(key), partition=day, reference=reference,
                                 scheduled=scheduled)
            warnings += rep.warnings
            for check, outcome in rep.checks.items():
                if not outcome.passed:
                    errors.setdefault(check, []).append(outcome.message)
            if df is not None:
                parsed[day] = df
        for w in warnings:
            context.log.warning(w)
        if errors:
            yield from fail_with_checks(
                name, checks, errors,
                summary=f"{name}: {sum(map(len, errors.values()))} problem(s) in {len(days)} day(s) of feed {feed!r}; "
                        "nothing written",
                metadata={"feed": feed, "days": ", ".join(days[:31])},
            )
            return
        rows = {}
        for day, df in parsed.items():
            lk.write(name, day, df)
            rows[day] = len(df)
            context.log.info(f"{name} {day}: {len(df)} rows -> {lk.describe(lk.key(name, day))}")
        total = int(sum(rows.values()))
        record_inputs(context, inputs)
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": total,
                "rows_per_day": dg.MetadataValue.float(total / max(1, len(rows))),
                "days": len(rows),
                "warnings": len(warnings),
                "lake_path": dg.MetadataValue.path(lk.describe(name)),
            },
            check_results=passed_checks(name, checks, {"row_count": {"rows": total}}),
        )

    return _asset


raw_flights = _ingestion_asset(
    "raw_flights", "schedules",
    "Flights planned for the day (the schedule feed, known before departure), typed and validated.",
)
raw_weather = _ingestion_asset(
    "raw_weather", "weather",
    "Hourly weather at the three NYC origins for the day, typed and validated; impossible sensor "
    "readings set to missing.",
)
flight_outcomes = _ingestion_asset(
    "flight_outcomes", "outcomes",
    "What happened to the day's flights (departure/arrival times and delays, cancellations); lands a "
    "day late. Every outcome must match a flight of the day's validated schedule.",
    deps=["raw_flights"],
)
