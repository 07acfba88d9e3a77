"""MLflow tracking (no Dagster here; import this module lazily).

* :func:`configure` points MLflow at the tracking URI and, for the local SQLite store, creates
  the database once under a file lock (parallel processes otherwise race on its migration) and
  turns on WAL so parallel writers wait instead of failing with "database is locked".
* :func:`tracking_errors` turns an unreachable tracking server into one clear error.
* One parent run per Dagster run (tag ``dagster_run_id``), found or created race-safely; every
  trial is a nested run under it; batched logging; system metrics while a trial trains.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_assets.settings import EXPERIMENT_NAME

log = logging.getLogger(__name__)
_CONFIGURED: dict[str, str] = {}


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached."""


_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
                "Read timed out", "RemoteDisconnected", "Connection aborted")
# MLflow's own HTTP retries default to 7 with backoff factor 2 (minutes of waiting per call); the
# Dagster steps have their own RetryPolicy, so keep MLflow's short unless the user set them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@contextlib.contextmanager
def tracking_errors():
    """Turn "cannot reach the tracking server" (buried in MLflow's and urllib3's messages) into
    one clear :class:`TrackingUnavailable`; everything else passes through unchanged."""
    try:
        yield
    except TrackingUnavailable:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if not any(s in text for s in _UNREACHABLE):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrackingUnavailable(
            f"MLflow tracking server {mlflow.get_tracking_uri()} is unreachable ({first}); "
            "the step is retried with backoff and then fails; re-run it once the server is back"
        ) from exc


def configure(tracking_uri: str, artifact_root: str | None = None, experiment: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at ``tracking_uri`` and make sure the experiment exists; returns its id."""
    if tracking_uri.startswith(("http://", "https://")):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
    key = f"{tracking_uri}|{experiment}"
    if key in _CONFIGURED:
        mlflow.set_tracking_uri(tracking_uri)
        return _CONFIGURED[key]
    mlflow.set_tracking_uri(tracking_uri)
    db = _sqlite_path(tracking_uri)
    lock = _file_lock(db.with_suffix(".lock")) if db else contextlib.nullcontext()
    with lock:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(db, timeout=60) as con:
                con.execute("PRAGMA journal_mode=WAL")
        client = MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment, artifact_location=artifact_root)
            except mlflow.exceptions.MlflowException:  # created by another process meanwhile
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
    _CONFIGURED[key] = exp_id
    return exp_id


def parent_run_id(experiment_id: str, dagster_run_id: str, *, job_name: str = "", tags: dict | None = None) -> str:
    """The MLflow run of a Dagster run: found by tag ``dagster_run_id`` or created.

    Steps run in parallel processes may both create one; the oldest wins and the others are
    deleted, so every process converges on the same parent run.
    """
    client = MlflowClient()
    query = f"tags.dagster_run_id = '{dagster_run_id}' and tags.mlops_role = 'parent'"
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=5)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"dagster-{dagster_run_id[:8]}",
                            tags={"dagster_run_id": dagster_run_id, "dagster_job": job_name,
                                  "mlops_role": "parent", **(tags or {})})
    time.sleep(0.05)
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=5)
    winner = found[0].info.run_id if found else run.info.run_id
    if winner != run.info.run_id:
        client.delete_run(run.info.run_id)
    return winner


def start_trial_run(experiment_id: str, parent_id: str, name: str, tags: dict[str, str]) -> str:
    client = MlflowClient()
    run = client.create_run(experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": parent_id, "mlops_role": "trial", **tags})
    return run.info.run_id


def log_batch(run_id: str, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
              tags: dict[str, str] | None = None) -> None:
    """One ``log_batch`` call instead of many ``log_metric`` calls (much faster remotely)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v == v],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


@contextlib.contextmanager
def system_metrics(run_id: str, interval_s: float = 1.0):
    """MLflow's system-metrics logging (CPU, memory, disk, network; GPU when present) into
    ``run_id`` while the block runs, sampled every ``interval_s``."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, samples_before_logging=1)
    monitor.start()
    try:
        yield
    finally:
        # A short trial can end before the first interval: record one last sample either way.
        with contextlib.suppress(Exception):
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.finish()


def end_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status=status)


def close_open_runs(experiment_id: str, dagster_run_id: str, reason: str, status: str = "FAILED") -> list[str]:
    """End with ``status`` every MLflow run of ``dagster_run_id`` (its parent run and its trials)
    that is still RUNNING, tagged with ``reason``; returns their ids. A run whose process was
    killed never ends its own MLflow runs, and a failed one never ends its parent run: without
    this they stay RUNNING in the MLflow UI for ever."""
    from mlflow.entities import RunTag

    client = MlflowClient()
    found = client.search_runs([experiment_id], f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'",
                               max_results=1000)
    for run in found:
        client.log_batch(run.info.run_id, tags=[RunTag("mlops_closed_reason", reason[:500])])
        client.set_terminated(run.info.run_id, status=status)
    return [r.info.run_id for r in found]
