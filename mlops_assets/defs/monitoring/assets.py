"""Monitoring: daily feature drift against the champion's training reference, and live
performance once the day's outcomes have landed."""


import dagster as dg

from mlops_assets.defs.common import OWNERS, md_table
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import daily_partitions, single_run, trailing_days, window_days

DRIFT_WINDOW_DAYS = 7
from mlops_assets.defs.resources import LakeStorage, MlflowTracking


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[dg.AssetDep("flight_features", partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=-(DRIFT_WINDOW_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True)),
        "model_deployment"],
    kinds={"scipy", "parquet"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),
)
def feature_drift(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage):
    """PSI per feature (with a KS test and Wasserstein distance for numeric ones) of the features
    of the 7 days ending with the day against the champion's training reference, stored with the
    model at training time.  (One day alone is always 'drifted': its weather and weekday are one
    point of the training window's range.)"""
    from mlops_assets.lib import registry
    from mlops_assets.lib.drift import PSI_MAJOR, drift_report

    mlflow.experiment_id()
    champ = registry.alias_version(registry.CHAMPION)
    if champ is None:
        raise dg.Failure(description="feature_drift: no 'champion' model (and so no reference) yet")
    version = str(champ.version)
    ref = registry.load_reference(version)
    lk = lake.lake()
    last = None
    worst = 0.0
    for day in window_days(context):
        window = [d for d in trailing_days(day, DRIFT_WINDOW_DAYS) if lk.has("flight_features", d)]
        rep = drift_report(ref, lk.read_many("flight_features", window))
        rep.insert(0, "date", day)
        rep["window"] = f"{window[0]}..{window[-1]}"
        rep["model_version"] = version
        lk.write("feature_drift", day, rep)
        worst = max(worst, float(rep["psi"].max()))
        last = rep
    top = last.sort_values("psi", ascending=False).head(8)
    return dg.MaterializeResult(metadata={
        "max_psi": dg.MetadataValue.float(worst),
        "features_major_drift": int((last["psi"] > PSI_MAJOR).sum()),
        "features_moderate_drift": int((last["level"] == "moderate").sum()),
        "drifted_features": ", ".join(last.loc[last["psi"] > PSI_MAJOR, "feature"]) or "none",
        "model_version": version,
        "window": str(last["window"].iloc[0]),
        "top_features": dg.MetadataValue.md(md_table(
            top[["feature", "psi", "level", "ks_stat", "wasserstein_std"]].to_dict("records"))),
    })


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=["flight_delay_predictions", "training_examples"],
    kinds={"scikitlearn", "parquet"},
    owners=OWNERS,
    op_tags=cpu_step_tags("small"),
)
def prediction_performance(context: dg.AssetExecutionContext, lake: LakeStorage):
    """Live performance once the day's outcomes have landed: ROC AUC, log loss, Brier score and
    predicted vs actual delay rate, for the model version that made the predictions."""
    import pandas as pd

    from mlops_assets.lib.features import LABEL
    from mlops_assets.lib.metrics import classification_metrics

    lk = lake.lake()
    rows = []
    for day in window_days(context):
        pred = lk.read("flight_delay_predictions", day)
        ex = lk.read("training_examples", day, columns=["flight_id", LABEL, "status"])
        j = pred.merge(ex, on="flight_id", how="inner", validate="one_to_one")
        j = j[j[LABEL].notna()]
        for version, g in j.groupby("model_version"):
            m = classification_metrics(g[LABEL].to_numpy(), g["delay_probability"].to_numpy())
            rows.append({"date": day, "model_version": str(version), **m})
    perf = pd.DataFrame(rows)
    for day, g in perf.groupby("date"):
        lk.write("prediction_performance", day, g.reset_index(drop=True))
    last = perf.iloc[-1]
    return dg.MaterializeResult(metadata={
        "roc_auc": dg.MetadataValue.float(float(last["roc_auc"])),
        "log_loss": dg.MetadataValue.float(float(last["log_loss"])),
        "brier": dg.MetadataValue.float(float(last["brier"])),
        "predicted_rate": dg.MetadataValue.float(float(last["predicted_rate"])),
        "actual_rate": dg.MetadataValue.float(float(last["actual_rate"])),
        "labelled_flights": int(last["n"]),
        "model_version": str(last["model_version"]),
        "days": dg.MetadataValue.md(md_table(perf[["date", "model_version", "n", "roc_auc", "log_loss", "brier",
                                                   "predicted_rate", "actual_rate"]].to_dict("records"))),
    })
