"""Shared fixtures.  Small sweeps and windows keep the suite fast; each test that touches state
gets its own MLOPS_HOME (landing zone, lake, MLflow SQLite store, Dagster instance)."""

import os

# Set before any mlops_assets module reads its settings (they are read at import).
os.environ.setdefault("MLOPS_TRIALS", "2")
os.environ.setdefault("MLOPS_TRAIN_WEEKS", "2")
os.environ.setdefault("MLOPS_MAX_CONCURRENT", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pytest  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MLOPS_HOME (and DAGSTER_HOME inside it) for one test."""
    from mlops_assets.settings import ensure_dagster_home, get_settings

    h = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_HOME", str(h))
    monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
    # mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI: keep it from leaking between tests.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    ensure_dagster_home(init_storage=False)  # tests that need the instance's storages create them
    yield h
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()
