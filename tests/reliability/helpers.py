"""Shared set-up for the reliability tests: a home of real days and small real models in the real
MLflow registry (no Dagster run needed to have a champion to protect)."""

import contextlib
import os
import uuid

import pytest

from tests.helpers import free_port  # noqa: F401 (re-exported for the tests that import it from here)


@contextlib.contextmanager
def module_home(tmp_path_factory, name: str, days: tuple[str, str] | None = None, **env):
    """Like the ``home`` fixture, for a whole module: MLOPS_HOME, DAGSTER_HOME and ``env``; with
    ``days`` (first, last), those days replayed and ingested into its lake (a copy of a home that
    ingested them once for the whole pytest run: ``ingested_home``)."""
    from mlops_assets.settings import ensure_dagster_home, get_settings
    from tests.helpers import copy_home

    h = tmp_path_factory.mktemp(name) / "mlops"
    if days:
        copy_home(ingested_home(tmp_path_factory, *days), h)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(h))
    mp.setenv("DAGSTER_HOME", str(h / "dagster"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    for k, v in env.items():
        mp.setenv(k, str(v))
    get_settings.cache_clear()
    ensure_dagster_home()
    try:
        yield h
    finally:
        mp.undo()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        get_settings.cache_clear()


def ingested_home(tmp_path_factory, first: str, last: str):
    """A home (landing zone, lake, Dagster instance) with ``first``..``last`` replayed and ingested
    (``ingest``), built once per pytest run and shared by every worker: the first to ask builds it
    under a lock. Read-only: a module works on its own copy (tests/helpers.copy_home)."""
    from filelock import FileLock

    from mlops_assets.settings import ensure_dagster_home, get_settings
    from tests.conftest import shared_dir

    root = shared_dir(tmp_path_factory)
    home = root / f"ingested-{first}-{last}"
    with FileLock(str(root / f"ingested-{first}-{last}.lock")):
        if not (home / ".ingested").exists():
            import shutil

            shutil.rmtree(home, ignore_errors=True)  # what a failed attempt left
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("MLOPS_HOME", str(home))
                mp.setenv("DAGSTER_HOME", str(home / "dagster"))
                mp.delenv("MLFLOW_TRACKING_URI", raising=False)
                get_settings.cache_clear()
                try:
                    ensure_dagster_home()
                    ingest(first, last)
                finally:
                    get_settings.cache_clear()
            (home / ".ingested").write_text("")  # written last: its presence means "built"
    return home


def ingest(first: str, last: str) -> None:
    """Replay and ingest ``first``..``last`` (one range run) into the current home's lake."""
    from datetime import date, timedelta

    import dagster as dg

    from mlops_assets.defs.features import assets as features
    from mlops_assets.defs.ingestion import assets as ingestion
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.lib.source import replay
    from mlops_assets.settings import get_settings

    s = get_settings()
    replay(s.landing_uri, (date.fromisoformat(last) + timedelta(days=1)).isoformat(), first)
    r = dg.materialize(
        [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
         features.flight_features, features.training_examples],
        resources=build_resources(s),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
    assert r.success


def register_model(days: list[str], *, alias: str | None = None, shuffle_seed: int | None = None,
                   params: dict | None = None, tags: dict | None = None) -> str:
    """Train a logistic regression on the lake's examples of ``days`` and register it as a real
    version of ``flight_delay`` (pyfunc, drift reference, tags); returns the version."""
    from mlops_assets.lib import registry, tracking
    from mlops_assets.lib.drift import build_reference
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES
    from mlops_assets.lib.storage import Lake
    from mlops_assets.lib.training import make_training_set, score_split, train_trial
    from mlops_assets.settings import get_settings

    s = get_settings()
    ts = make_training_set(Lake(s.lake_uri).read_many("training_examples", days), shuffle_labels_seed=shuffle_seed)
    exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    parent = tracking.parent_run_id(exp, f"test-{uuid.uuid4().hex[:8]}")
    run_id = tracking.start_trial_run(exp, parent, "test-model", {"family": "logistic_regression"})
    r = train_trial("logistic_regression", params or {"C": 1.0}, ts)
    ref = build_reference(ts[ts["split"] == "train"], DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    uri = registry.log_model(run_id, r.model, "logistic_regression", ts[ts["split"] == "holdout"].head(5), ref)
    tracking.end_run(run_id)
    auc = score_split(r.model, ts)["roc_auc"]
    return registry.register(uri, {"mlflow_run_id": run_id, "family": "logistic_regression",
                                   "holdout_roc_auc": f"{auc:.4f}", **(tags or {})}, alias=alias)


@contextlib.contextmanager
def running_server(cmd: list[str], port: int, env: dict, log_path, timeout_s: float = 120):
    """A scoring server process (``mlflow models serve`` or ``mlops-serve``) started with ``cmd``, up
    once ``/ping`` answers 200 on ``port``; stopped, with its children, at the end."""
    import http.client
    import signal
    import subprocess
    import time

    log = open(log_path, "w")  # noqa: SIM115  (the process writes it until the end)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, open(log_path).read()[-3000:]
            time.sleep(0.3)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
