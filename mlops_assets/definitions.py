"""The code location: ``mlops_assets.definitions:defs``.

Thin: assets from ``defs/<domain>/``, resources and executor for the active profile
(``MLOPS_PROFILE``).  Heavy libraries (torch, mlflow, scikit-learn) are imported inside the
steps, never here.
"""


import atexit
import gc

import dagster as dg

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.ingestion import sensors as ingestion_sensors
from mlops_assets.defs.jobs import ALL_JOBS
from mlops_assets.defs.monitoring import assets as monitoring
from mlops_assets.defs.monitoring import health
from mlops_assets.defs.monitoring import sensors as monitoring_sensors
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.defs.training import schedules
from mlops_assets.settings import get_settings


def build_executor(settings):
    if settings.profile == "k8s":
        from dagster_k8s import k8s_job_executor

        from mlops_assets.defs.k8s import k8s_executor_config

        return k8s_job_executor.configured(k8s_executor_config(settings))
    if settings.executor == "in_process":
        return dg.in_process_executor
    # forkserver: each step process forks from a server that has already imported the code
    # location and the heavy libraries its steps use, instead of importing them again (B2).
    return dg.multiprocess_executor.configured({
        "max_concurrent": settings.max_concurrent,
        "start_method": {"forkserver": {"preload_modules": PRELOAD}},
    })


PRELOAD = [
    "mlops_assets.definitions",
    "mlops_assets.lib.training", "mlops_assets.lib.registry", "mlops_assets.lib.models.torch_mlp",
    "sklearn.ensemble", "sklearn.linear_model", "sklearn.compose", "sklearn.metrics", "torch", "pandas", "pyarrow.parquet",
    # MLflow's SQL stores import alembic and SQLAlchemy's dialects on first use: 0.6 s per step process.
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store", "mlflow.pyfunc",
    "mlflow.system_metrics.system_metrics_monitor", "alembic.migration", "alembic.script", "sqlalchemy.dialects.sqlite",
    "scipy.stats", "sklearn.impute",
    # torch.optim's Optimizer.__init__ imports torch._dynamo (and sympy) on first use: 790 modules,
    # 1.2-3.5 s in every torch trial step process otherwise.
    "torch.optim", "torch._dynamo",
]


# A process that ran steps holds a large heap (Dagster, MLflow, SQLAlchemy, torch, sklearn), and
# the interpreter's last garbage collection walks all of it at exit: 2.2 s after every
# `dagster job execute` (py-spy, bench B2). Freezing the heap at exit skips that walk; the OS frees
# the memory anyway. atexit runs last what is registered first, so other exit hooks run before it.
atexit.register(gc.freeze)

settings = get_settings()

defs = dg.Definitions(
    assets=[
        ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
        features.flight_features, features.training_examples,
        training.training_set, *training.candidate_models,
        evaluation.challenger,
        deployment.champion, deployment.shadow_promotion, deployment.model_deployment, deployment.flight_delay_predictions,
        monitoring.feature_drift, monitoring.prediction_performance, health.platform_health,
    ],
    jobs=[*ALL_JOBS, health.platform_health_job],
    sensors=[ingestion_sensors.landing_zone_sensor,
             monitoring_sensors.model_health_sensor, monitoring_sensors.shadow_promotion_sensor,
             monitoring_sensors.run_failure_alert,
             monitoring_sensors.close_mlflow_runs_of_failed_runs, monitoring_sensors.close_mlflow_runs_of_canceled_runs],
    schedules=[schedules.weekly_training_schedule, schedules.daily_scoring_schedule,
               health.platform_health_schedule],
    resources=build_resources(settings),
    executor=build_executor(settings),
)
