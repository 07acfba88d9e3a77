"""Jobs: named selections of the asset graph, for the CLI, schedules and sensors."""


import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job", selection=dg.AssetSelection.groups("ingestion"),
    description="Ingest a day's landing feeds into the lake (daily).",
)
features_job = dg.define_asset_job(
    "features_job", selection=dg.AssetSelection.groups("features"),
    description="Features and (once outcomes land) training examples for a day.",
)
daily_data_job = dg.define_asset_job(
    "daily_data_job", selection=dg.AssetSelection.groups("ingestion", "features"),
    description="Ingestion and features for a day or a range (single-run backfill).",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_set", "challenger", "champion", "model_deployment")
    | dg.AssetSelection.key_prefixes(["candidate_models"]),
    description="The weekly cycle: training set, sweeps, challenger + gate, promotion and, when the "
                "champion moved, its serving deployment.",
)
deployment_job = dg.define_asset_job(
    "deployment_job", selection=dg.AssetSelection.assets("model_deployment"),
    description="Render (and on Kubernetes apply) the serving deployment of the champion.",
)
scoring_job = dg.define_asset_job(
    "scoring_job", selection=dg.AssetSelection.assets("flight_delay_predictions", "feature_drift"),
    description="Daily batch predictions and feature drift for the champion.",
)
performance_job = dg.define_asset_job(
    "performance_job", selection=dg.AssetSelection.assets("prediction_performance"),
    description="Live performance for a day once its outcomes have landed.",
)
shadow_promotion_job = dg.define_asset_job(
    "shadow_promotion_job", selection=dg.AssetSelection.assets("shadow_promotion", "model_deployment"),
    description="Promote the shadow challenger once it has been significantly better live "
                "(MLOPS_SHADOW_PROMOTE_DAYS), and deploy it.",
)
ALL_JOBS = [ingestion_job, features_job, daily_data_job, training_job, deployment_job, scoring_job, performance_job,
            shadow_promotion_job]
