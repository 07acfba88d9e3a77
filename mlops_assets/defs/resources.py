"""Resources per profile: the landing zone, the lake, MLflow.  Asset code never changes between
profiles; only these instances do (``build_resources``)."""


import dagster as dg

from mlops_assets.settings import EXPERIMENT_NAME, Settings


class LandingZone(dg.ConfigurableResource):
    """Where the source system drops daily feeds (a folder or an fsspec URI)."""

    root: str

    def location(self):
        from mlops_assets.lib.storage import Location

        return Location(self.root)


class LakeStorage(dg.ConfigurableResource):
    """The lake: one Parquet file per asset partition (a folder or an fsspec URI)."""

    root: str

    def lake(self):
        from mlops_assets.lib.storage import Lake

        return Lake(self.root)


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry.  One parent run per Dagster run (found by the tag
    ``dagster_run_id``, race-safe across parallel step processes); trials are nested runs.

    Plays the part of ``dagster_mlflow.mlflow_tracking`` (an old-style resource that can create two
    parent runs when steps run in parallel processes) as a ConfigurableResource.
    """

    tracking_uri: str
    artifact_root: str | None = None
    experiment: str = EXPERIMENT_NAME

    def experiment_id(self) -> str:
        from mlops_assets.lib import registry

        return registry.configure(self.tracking_uri, self.artifact_root, self.experiment)

    def parent_run(self, context) -> str:
        from mlops_assets.lib import registry

        exp = self.experiment_id()
        return registry.parent_run_id(
            exp, context.run_id, job_name=context.job_name,
            tags={"dagster_partition": context.partition_key if context.has_partition_key else ""},
        )


def build_resources(settings: Settings) -> dict:
    if settings.remote_tracking:
        tracking = MlflowTracking(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                                  artifact_root=None)
    else:
        tracking = MlflowTracking(tracking_uri=settings.tracking_uri,
                                  artifact_root=settings.mlflow_artifact_root)
    return {
        "landing": LandingZone(root=settings.landing_uri),
        "lake": LakeStorage(root=settings.lake_uri),
        "mlflow": tracking,
        "io_manager": dg.FilesystemIOManager(base_dir=str(settings.dagster_home / "storage")),
    }
