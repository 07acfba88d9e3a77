"""What the sensors read from the instance, each read bounded by the days or runs it is about
(never every materialisation ever made), so a tick costs the same in December as in January."""

from __future__ import annotations

import dataclasses

import dagster as dg

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION


def latest_records(instance, asset: str, partitions) -> dict[str, "dg.EventLogRecord"]:
    """The latest materialisation record of each of ``partitions`` that has one: two indexed
    queries whatever the history's length."""
    key = dg.AssetKey(asset)
    ids = instance.get_latest_storage_id_by_partition(key, MATERIALIZATION, partitions=set(partitions))
    if not ids:
        return {}
    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())),
                                           limit=len(ids)).records
    return {r.partition_key: r for r in recs}


def materialised(instance, asset: str, partitions) -> set[str]:
    return set(instance.get_latest_storage_id_by_partition(dg.AssetKey(asset), MATERIALIZATION,
                                                           partitions=set(partitions)))


@dataclasses.dataclass(frozen=True)
class Serving:
    """The model the serving deployment runs, from ``model_deployment``'s latest materialisation."""
    version: str
    week: str
    data_window: str
    holdout: dict[str, float]
    storage_id: int
    run_id: str = ""  # the Dagster run that deployed it: what a prediction names as its deployment

    @property
    def data_end(self) -> str:
        return self.data_window.rpartition("..")[2]


def serving(instance) -> Serving | None:
    recs = instance.fetch_materializations(dg.AssetKey("model_deployment"), limit=1).records
    if not recs:
        return None
    md = recs[0].asset_materialization.metadata

    def val(k, default=""):
        return md[k].value if k in md else default

    return Serving(version=str(val("model_version")), week=str(val("week")), data_window=str(val("data_window")),
                   holdout={"roc_auc": float(val("holdout_roc_auc", float("nan"))),
                            "log_loss": float(val("holdout_log_loss", float("nan")))},
                   storage_id=recs[0].storage_id, run_id=recs[0].run_id)


def run_days(run: dg.DagsterRun) -> list[str]:
    """The partition keys a run targets (one, or a range of days)."""
    from mlops_assets.lib.landing import days_of_range

    tags = run.tags
    if RANGE_START in tags and RANGE_END in tags:
        try:
            return days_of_range(tags[RANGE_START], tags[RANGE_END])
        except ValueError:
            return []
    return [tags["dagster/partition"]] if "dagster/partition" in tags else []


def busy_days(instance, assets: set[str], jobs: set[str]) -> set[str]:
    """Days that a run in flight (queued or running, whoever launched it) materialises one of
    ``assets`` for: a sensor waits for it rather than request the same partitions again."""
    busy: set[str] = set()
    for rec in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        run = rec.dagster_run
        keys = {k.to_user_string() for k in (run.asset_selection or ())}
        if (keys & assets) or (not keys and run.job_name in jobs):
            busy.update(run_days(run))
    return busy
