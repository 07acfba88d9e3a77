"""The code location: ``mlops_assets.definitions:defs``.

Thin: every asset, check, job, sensor and schedule is found in the ``defs/`` package (adding one
is a one-file change: define it at the top level of a module under ``defs/``); resources and the
executor come from the active profile (``MLOPS_PROFILE``).  Heavy libraries (torch, mlflow,
scikit-learn) are imported inside the steps, never here.

``dg.load_definitions_from_package_module`` rather than ``dg.load_from_defs_folder``: the latter
finds the package through ``pyproject.toml``, which an installed package (the image's
``pip install .``) does not carry; both find the same definitions (tests/test_defs.py).
"""


import atexit
import gc
import warnings

import dagster as dg

import mlops_assets.defs
from mlops_assets.defs.resources import build_resources
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


def load_defs_folder() -> dg.Definitions:
    """Everything defined at the top level of a module under ``defs/``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # the loader itself is marked preview
        return dg.load_definitions_from_package_module(mlops_assets.defs)


defs = dg.Definitions.merge(
    load_defs_folder(),
    dg.Definitions(resources=build_resources(settings), executor=build_executor(settings)),
)
