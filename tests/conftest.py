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


# The demo as the e2e test and the production-topology test both run it (the latter compares).
DEMO_ARGS = ["--until-week", "2013-01-21", "--score-days", "2"]
DEMO_ENV = {"MLOPS_TRAIN_WEEKS": "2", "MLOPS_TRIALS": "2", "MLOPS_EXECUTOR": "multiprocess"}


def run_demo(env: dict, json_path) -> str:
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "mlops-demo"), *DEMO_ARGS, "--json", str(json_path)],
                         env={**env, **DEMO_ENV}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory):
    """``mlops-demo`` on the embedded default (SQLite instance, local MLflow store, local lake) on a
    short window: (home, env, stdout); its numbers in ``home/demo.json``."""
    home = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_LAKE_URI",
                                                             "MLOPS_LANDING_URI")}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), **DEMO_ENV})
    stdout = run_demo(env, home / "demo.json")
    return home, env, stdout
