"""Helpers shared by the domains: owners, validated writes reported as blocking checks."""


from collections.abc import Iterable, Iterator

import dagster as dg

OWNERS = ["team:ml-platform"]


def check_specs(asset: str, names: Iterable[str], descriptions: dict[str, str] | None = None) -> list[dg.AssetCheckSpec]:
    descriptions = descriptions or {}
    return [dg.AssetCheckSpec(n, asset=asset, blocking=True, description=descriptions.get(n)) for n in names]


def fail_with_checks(asset: str, names: Iterable[str], errors: dict[str, list[str]], *, summary: str,
                     metadata: dict | None = None) -> Iterator:
    """Report every check (failed ones with their messages) and then fail the step, so that
    nothing is written and nothing downstream runs."""
    for n in names:
        msgs = errors.get(n, [])
        yield dg.AssetCheckResult(
            asset_key=asset, check_name=n, passed=not msgs,
            severity=dg.AssetCheckSeverity.ERROR,
            description=("; ".join(msgs)[:2000] if msgs else "passed"),
            metadata={"errors": len(msgs)} if msgs else {},
        )
    all_msgs = [m for n in names for m in errors.get(n, [])]
    raise dg.Failure(
        description=f"{summary}:\n" + "\n".join(f"- {m}" for m in all_msgs[:50]),
        metadata={"errors": len(all_msgs), **(metadata or {})},
    )


def passed_checks(asset: str, names: Iterable[str], metadata: dict[str, dict] | None = None) -> list[dg.AssetCheckResult]:
    metadata = metadata or {}
    return [dg.AssetCheckResult(asset_key=asset, check_name=n, passed=True, metadata=metadata.get(n, {}))
            for n in names]


def record_inputs(context, per_partition: dict[str, dict[str, str]]) -> None:
    """Record, on each partition's materialisation, the identity of what it was computed from:
    ``input_fingerprint`` (a digest of the bytes of every input read, the model version where one
    scored, and the code version) and, for ingestion, ``source_sha256`` (the landing file's).
    The landing sensor compares the latter with the landing zone, so a day whose feeds did not
    change is never requested again, whoever materialised it; the year report counts a
    materialisation whose ``input_fingerprint`` equals its partition's previous one as redundant."""
    for partition, md in per_partition.items():
        context.add_asset_metadata(md, partition_key=partition)


def md_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    if not rows:
        return "_none_"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def usage_metadata(usage) -> dict:
    """Numeric metadata (plotted across partitions in the UI) from a ``lib.usage.measure()``."""
    md = {k: dg.MetadataValue.float(float(v)) for k, v in usage.metrics.items()}
    md["device"] = usage.device
    return md


def tracking_guard(fn):
    """Run a step body (function or generator) so that an unreachable MLflow tracking server
    fails it with one clear message (``tracking.TrackingUnavailable``); the step's RetryPolicy,
    where it has one, retries it first."""
    import functools
    import inspect

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            from mlops_assets.lib import tracking

            with tracking.tracking_errors():
                yield from fn(*args, **kwargs)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mlops_assets.lib import tracking

        with tracking.tracking_errors():
            return fn(*args, **kwargs)
    return wrapper
