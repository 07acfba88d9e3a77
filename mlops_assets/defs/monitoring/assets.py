"""Monitoring: daily feature drift against the champion's training reference, and live
performance once the day's outcomes have landed."""


import dagster as dg

from mlops_assets.defs import observed
from mlops_assets.defs.common import OWNERS, md_table, record_inputs
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import daily_partitions, single_run, trailing_days, window_days
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
from mlops_assets.settings import get_settings

DRIFT_WINDOW_DAYS = 7


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
    of the 7 days ending with the day, and of the deployed model's output on them, against its
    training reference (the version ``model_deployment`` last recorded), stored with the model at training time.  A feature is in
    alarm when its PSI is above the threshold calibrated on the training window's own weeks
    (``lib.drift``); each row carries the feature's importance to the model.  (One day alone is
    always 'drifted': its weather and weekday are one point of the training window's range.)"""
    import numpy as np
    import pandas as pd

    from mlops_assets.lib import registry
    from mlops_assets.lib.drift import drift_report, weighted_alarm_share
    from mlops_assets.lib.features import feature_matrix
    from mlops_assets.lib.storage import digest

    mlflow.experiment_id()
    deployed = observed.serving(context.instance)
    if deployed is None:
        raise dg.Failure(description="feature_drift: no model is deployed yet (no model_deployment "
                                     "materialisation), and so no reference to compare with")
    version = deployed.version
    ref = registry.load_reference(version)
    model = registry.load_version(version) if ref.get("output") else None
    lk = lake.lake()
    last = None
    worst = 0.0
    inputs = {}
    code = get_settings().code_version
    read: dict[str, tuple] = {}  # each day's features read once, though up to 7 windows hold it
    for day in window_days(context):
        window = [d for d in trailing_days(day, DRIFT_WINDOW_DAYS) if d in read or lk.has("flight_features", d)]
        if not window:
            raise dg.Failure(description=f"feature_drift {day}: no flight_features partition in the 7 days ending "
                                         "with it; materialise them first")
        for d in [d for d in read if d < window[0]]:  # out of every later window
            del read[d]
        for d in window:
            if d not in read:
                f, sha = lk.read_fp("flight_features", d)
                out = (model.predict(feature_matrix(f))["delay_probability"].to_numpy()
                       if model is not None and len(f) else None)
                read[d] = (f, sha, out)
        feats = pd.concat([read[d][0] for d in window], ignore_index=True)
        output = np.concatenate([read[d][2] for d in window]) if model is not None else None
        inputs[day] = {"input_fingerprint": digest(*(f"{d}:{read[d][1]}" for d in window), f"model:{version}", code)}
        rep = drift_report(ref, feats, output=output)
        rep.insert(0, "date", day)
        rep["window"] = f"{window[0]}..{window[-1]}"
        rep["model_version"] = version
        lk.write("feature_drift", day, rep)
        worst = max(worst, float(rep["psi"].max()))
        last = rep
    record_inputs(context, inputs)
    feats_last = last[last["kind"] != "output"]
    out_row = last[last["kind"] == "output"]
    top = last.assign(ratio=last["psi"] / last["threshold"]).sort_values("ratio", ascending=False).head(8)
    return dg.MaterializeResult(metadata={
        "max_psi": dg.MetadataValue.float(worst),
        "features_major_drift": int(feats_last["alarm"].sum()),
        "features_moderate_drift": int((feats_last["level"] == "moderate").sum()),
        "drifted_features": ", ".join(feats_last.loc[feats_last["alarm"], "feature"]) or "none",
        "weighted_drift_share": dg.MetadataValue.float(weighted_alarm_share(last)),
        **({} if out_row.empty else {
            "output_psi": dg.MetadataValue.float(float(out_row["psi"].iloc[0])),
            "output_drift": bool(out_row["alarm"].iloc[0])}),
        "model_version": version,
        "window": str(last["window"].iloc[0]),
        "top_features": dg.MetadataValue.md(md_table(
            top[["feature", "psi", "threshold", "level", "importance", "ks_stat", "wasserstein_std"]].to_dict("records"))),
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
    predicted vs actual delay rate, for the model version that made the predictions, beside the
    estimates made from the probabilities when the day was scored.  When a shadow challenger
    scored the day too, a ``role = shadow`` row compares it with the champion on the same flights
    (paired: ``auc_delta`` shadow - champion, with its 95% interval)."""
    import pandas as pd

    from mlops_assets.lib.features import LABEL
    from mlops_assets.lib.metrics import classification_metrics
    from mlops_assets.lib.shadow import compare, joined
    from mlops_assets.lib.storage import digest

    lk = lake.lake()
    rows, inputs = [], {}
    code = get_settings().code_version
    for day in window_days(context):
        pred, pred_sha = lk.read_fp("flight_delay_predictions", day)
        ex, ex_sha = lk.read_fp("training_examples", day, columns=["flight_id", LABEL, "status"])
        shadow, shadow_sha = lk.read_fp("shadow_predictions", day) if lk.has("shadow_predictions", day) else (None, "")
        inputs[day] = {"input_fingerprint": digest(pred_sha, ex_sha, shadow_sha, code)}
        j = pred.merge(ex, on="flight_id", how="inner", validate="one_to_one")
        j = j[j[LABEL].notna()]
        for version, g in j.groupby("model_version"):
            m = classification_metrics(g[LABEL].to_numpy(), g["delay_probability"].to_numpy())
            est = {k: float(g[k].iloc[0]) if k in g else float("nan")
                   for k in ("estimated_roc_auc", "estimated_log_loss")}
            rows.append({"date": day, "model_version": str(version), "role": "champion", **m, **est,
                         "estimate_error_roc_auc": est["estimated_roc_auc"] - m["roc_auc"]})
        if shadow is not None and len(shadow):
            pair = joined(pred, shadow, ex)
            c = compare(pair)
            m = classification_metrics(pair[LABEL].to_numpy(), pair["p_shadow"].to_numpy())
            rows.append({"date": day, "model_version": str(shadow["model_version"].iloc[0]), "role": "shadow", **m,
                         "champion_version": str(shadow["champion_version"].iloc[0]), "paired_flights": c["flights"],
                         **{k: c[k] for k in ("auc_delta", "auc_delta_ci_low", "auc_delta_ci_high")}})
    perf = pd.DataFrame(rows)
    for day, g in perf.groupby("date"):
        lk.write("prediction_performance", day, g.reset_index(drop=True))
    record_inputs(context, inputs)
    champ_rows = perf[perf["role"] == "champion"]
    last = champ_rows.iloc[-1]
    shadow_last = perf[(perf["role"] == "shadow") & (perf["date"] == last["date"])]
    return dg.MaterializeResult(metadata={
        **({} if shadow_last.empty else {
            "shadow_version": str(shadow_last["model_version"].iloc[0]),
            "shadow_auc_delta": dg.MetadataValue.float(float(shadow_last["auc_delta"].iloc[0])),
            "shadow_auc_delta_ci_low": dg.MetadataValue.float(float(shadow_last["auc_delta_ci_low"].iloc[0])),
            "shadow_auc_delta_ci_high": dg.MetadataValue.float(float(shadow_last["auc_delta_ci_high"].iloc[0]))}),
        "roc_auc": dg.MetadataValue.float(float(last["roc_auc"])),
        "log_loss": dg.MetadataValue.float(float(last["log_loss"])),
        "estimated_roc_auc": dg.MetadataValue.float(float(last["estimated_roc_auc"])),
        "estimated_log_loss": dg.MetadataValue.float(float(last["estimated_log_loss"])),
        "brier": dg.MetadataValue.float(float(last["brier"])),
        "predicted_rate": dg.MetadataValue.float(float(last["predicted_rate"])),
        "actual_rate": dg.MetadataValue.float(float(last["actual_rate"])),
        "labelled_flights": int(last["n"]),
        "model_version": str(last["model_version"]),
        "days": dg.MetadataValue.md(md_table(champ_rows[["date", "model_version", "n", "roc_auc", "estimated_roc_auc",
                                                   "log_loss", "estimated_log_loss", "brier",
                                                   "predicted_rate", "actual_rate"]].to_dict("records"))),
    })
