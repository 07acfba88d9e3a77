"""Features: pre-departure features per scheduled flight, and labelled training examples."""


import dagster as dg

from mlops_assets.defs.common import OWNERS, check_specs, fail_with_checks, passed_checks, record_inputs, usage_metadata
from mlops_assets.lib.usage import measure
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import daily_partitions, single_run, window_days
from mlops_assets.defs.resources import LakeStorage, LandingZone
from mlops_assets.settings import get_settings

FEATURE_CHECKS = ("no_leakage_columns", "flight_id_unique", "weather_coverage", "row_count_matches_schedule")
EXAMPLE_CHECKS = ("outcomes_match_schedule", "labels_present", "label_binary")
MIN_WEATHER_COVERAGE = 0.5


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    op_tags=cpu_step_tags("data"),  # a year in one run: 647 MiB (bench/step_memory.py)
    deps=["raw_flights", "raw_weather"],
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    check_specs=check_specs("flight_features", FEATURE_CHECKS, {
        "no_leakage_columns": "no column known only after departure",
        "flight_id_unique": "one row per scheduled flight",
        "weather_coverage": f"at least {MIN_WEATHER_COVERAGE:.0%} of flights matched to origin weather",
        "row_count_matches_schedule": "one feature row per scheduled flight",
    }),
)
def flight_features(context: dg.AssetExecutionContext, landing: LandingZone, lake: LakeStorage):
    """One row per scheduled flight with pre-departure features only: weather at the origin at the
    scheduled hour, plane age and size, calendar, route, scheduled congestion."""
    import io

    import pandas as pd

    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.lib.storage import sha256

    loc, lk = landing.location(), lake.lake()
    planes_bytes = loc.read_bytes("reference/planes.csv")
    planes = pd.read_csv(io.BytesIO(planes_bytes))
    days = window_days(context)
    out, errors, inputs = {}, {}, {}
    with measure() as usage:
        _build_features_days(days, lk, planes, out, errors, inputs, sha256(planes_bytes))
    if errors:
        yield from fail_with_checks("flight_features", FEATURE_CHECKS, errors,
                                    summary=f"flight_features failed for {len(days)} day(s); nothing written")
        return
    for day, feats in out.items():
        lk.write("flight_features", day, feats)
    record_inputs(context, inputs)
    total = sum(len(f) for f in out.values())
    coverage = sum(float(f["temp"].notna().sum()) for f in out.values()) / max(1, total)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "days": len(out),
            "features": len(FEATURE_COLUMNS),
            "weather_coverage": dg.MetadataValue.float(coverage),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(c, "feature") for c in FEATURE_COLUMNS]),
            **usage_metadata(usage),
        },
        check_results=passed_checks("flight_features", FEATURE_CHECKS, {"weather_coverage": {"coverage": coverage}}),
    )


def _build_features_days(days, lk, planes, out, errors, inputs, planes_sha):
    from mlops_assets.lib.features import build_features
    from mlops_assets.lib.storage import digest
    from mlops_assets.lib.validation import LeakageError

    code = get_settings().code_version
    for day in days:
        sched, sched_sha = lk.read_fp("raw_flights", day)
        weather, weather_sha = lk.read_fp("raw_weather", day)
        inputs[day] = {"input_fingerprint": digest(sched_sha, weather_sha, planes_sha, code)}
        try:
            feats = build_features(sched, weather, planes)
        except LeakageError as exc:  # the check fails, naming the partition
            errors.setdefault("no_leakage_columns", []).append(f"partition {day}: {exc}")
            continue
        dups = int(feats["flight_id"].duplicated().sum())
        if dups:
            errors.setdefault("flight_id_unique", []).append(f"partition {day}, column 'flight_id': {dups} duplicates")
        coverage = float(feats["temp"].notna().mean()) if len(feats) else 0.0
        if coverage < MIN_WEATHER_COVERAGE:
            errors.setdefault("weather_coverage", []).append(
                f"partition {day}, columns 'origin', 'time_hour': only {coverage:.0%} of flights matched weather")
        if len(feats) != len(sched):
            errors.setdefault("row_count_matches_schedule", []).append(
                f"partition {day}: {len(feats)} feature rows for {len(sched)} scheduled flights")
        out[day] = feats


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    op_tags=cpu_step_tags("data"),
    deps=["flight_features", "flight_outcomes"],
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    check_specs=check_specs("training_examples", EXAMPLE_CHECKS, {
        "outcomes_match_schedule": "every outcome belongs to a scheduled flight",
        "labels_present": "most scheduled flights have an arrival delay",
        "label_binary": "label is 0/1 for arrived flights, missing for cancelled and diverted ones",
    }),
)
def training_examples(context: dg.AssetExecutionContext, lake: LakeStorage):
    """The day's features joined with its outcomes (which land a day later) and the label
    ``arr_delay > 15``.  Cancelled and diverted flights are kept with ``status`` and no label."""
    from mlops_assets.lib.features import LABEL

    lk = lake.lake()
    days = window_days(context)
    out, errors, inputs = {}, {}, {}
    with measure() as usage:
        _build_examples_days(days, lk, out, errors, inputs)
    if errors:
        yield from fail_with_checks("training_examples", EXAMPLE_CHECKS, errors,
                                    summary=f"training_examples failed for {len(days)} day(s); nothing written")
        return
    for day, ex in out.items():
        lk.write("training_examples", day, ex)
    record_inputs(context, inputs)
    import pandas as pd

    allx = pd.concat(out.values(), ignore_index=True)
    status = allx["status"].value_counts().to_dict()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(allx),
            "days": len(out),
            "positive_rate": dg.MetadataValue.float(float(allx[LABEL].mean())),
            "arrived": int(status.get("arrived", 0)),
            "cancelled": int(status.get("cancelled", 0)),
            "diverted": int(status.get("diverted", 0)),
            **usage_metadata(usage),
        },
        check_results=passed_checks("training_examples", EXAMPLE_CHECKS),
    )


def _build_examples_days(days, lk, out, errors, inputs):
    from mlops_assets.lib.features import LABEL, ExamplesError, build_examples
    from mlops_assets.lib.storage import digest

    code = get_settings().code_version
    for day in days:
        feats, feats_sha = lk.read_fp("flight_features", day)
        outcomes, outcomes_sha = lk.read_fp("flight_outcomes", day)
        inputs[day] = {"input_fingerprint": digest(feats_sha, outcomes_sha, code)}
        try:
            ex = build_examples(feats, outcomes, partition=day,
                                file=lk.describe(lk.key("flight_outcomes", day)))
        except ExamplesError as exc:
            errors.setdefault(exc.check, []).append(str(exc))
            continue
        bad = ex[LABEL].notna() & ~ex[LABEL].isin([0.0, 1.0])
        if bad.any():
            errors.setdefault("label_binary", []).append(f"partition {day}, column 'label': {int(bad.sum())} bad labels")
        out[day] = ex
