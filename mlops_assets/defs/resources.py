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
        from mlops_assets.lib import tracking

        with tracking.tracking_errors():
            return tracking.configure(self.tracking_uri, self.artifact_root, self.experiment)

    def parent_run(self, context) -> str:
        from mlops_assets.lib import tracking

        exp = self.experiment_id()
        return tracking.parent_run_id(
            exp, context.run_id, job_name=context.job_name,
            tags={"dagster_partition": context.partition_key if context.has_partition_key else ""},
        )


class _PickleUPathIOManager(dg.UPathIOManager):
    extension = ".pkl"

    def dump_to_path(self, context, obj, path) -> None:
        import pickle

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def load_from_path(self, context, path):
        import pickle

        return pickle.loads(path.read_bytes())


class ObjectStoreIOManager(dg.ConfigurableIOManagerFactory):
    """Step outputs pickled under an fsspec URI (``s3://...``): on Kubernetes every step is its own
    pod, so what one step returns must be where the next pod can read it."""

    base_uri: str

    def create_io_manager(self, context):
        from upath import UPath

        return _PickleUPathIOManager(base_path=UPath(self.base_uri))


class KubernetesServing(dg.ConfigurableResource):
    """Applies the serving manifests (k8s profile) or only renders them (local profile)."""

    apply: bool = False
    in_cluster: bool = True
    rollout_timeout_s: int = 300

    def clients(self):
        """(AppsV1Api, CoreV1Api) of the kubernetes client."""
        from kubernetes import client, config

        if self.in_cluster:
            config.load_incluster_config()
        else:
            config.load_kube_config()
        return client.AppsV1Api(), client.CoreV1Api()


def build_resources(settings: Settings) -> dict:
    if settings.remote_tracking:
        tracking = MlflowTracking(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                                  artifact_root=None)
    else:
        tracking = MlflowTracking(tracking_uri=settings.tracking_uri,
                                  artifact_root=settings.mlflow_artifact_root)
    if settings.profile == "k8s":
        io_manager = ObjectStoreIOManager(base_uri=settings.io_uri or f"{settings.lake_uri.rstrip('/')}/_dagster_io")
    else:
        io_manager = dg.FilesystemIOManager(base_dir=str(settings.dagster_home / "storage"))
    return {
        "landing": LandingZone(root=settings.landing_uri),
        "lake": LakeStorage(root=settings.lake_uri),
        "mlflow": tracking,
        "io_manager": io_manager,
        "kubernetes": KubernetesServing(apply=settings.profile == "k8s"),
    }
