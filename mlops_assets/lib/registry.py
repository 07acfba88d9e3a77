"""MLflow tracking and the model registry (no Dagster here; import this module lazily).

* :func:`configure` points MLflow at the tracking URI and, for the local SQLite store, creates
  the database once under a file lock (parallel processes otherwise race on its migration) and
  turns on WAL so parallel writers wait instead of failing with "database is locked".
* One parent run per Dagster run (tag ``dagster_run_id``), found or created race-safely; every
  trial is a nested run under it.
* The registered model ``flight_delay`` takes ``flight_features`` rows and returns a
  ``delay_probability`` column.  Aliases (``champion``, ``challenger``) replace stages.
* Models are loaded only from our own registry (``models:/flight_delay/<version>``): loading an
  MLflow model unpickles code.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel

from mlops_assets.settings import EXPERIMENT_NAME, MODEL_NAME

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
_CONFIGURED: dict[str, str] = {}
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")
_VERSION_URI = re.compile(rf"^models:/{MODEL_NAME}/(\d+|@{CHAMPION}|@{CHALLENGER})$")


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


def serving_max_rows() -> int:
    """Rows allowed in one online scoring request (``MLOPS_SERVING_MAX_ROWS``, default 10,000)."""
    return int(os.environ.get("MLOPS_SERVING_MAX_ROWS") or 10_000)


def _freeze_heap() -> None:
    """Move every object alive now (MLflow, scikit-learn, pandas, FastAPI and the model: about
    230,000 objects) out of the garbage collector's reach. Without it, each worker of the scoring
    server ran a full collection over that heap every ~200 requests, a 140 ms pause that was the
    whole p99 of bench B6 (178 ms; 61 ms with the collector off)."""
    import gc

    gc.collect()
    gc.freeze()
    FlightDelayModel._heap_frozen = True


class FlightDelayModel(PythonModel):
    """Takes ``flight_features`` rows as they are; returns ``delay_probability`` per row."""

    _heap_frozen = False  # per process: see _freeze_heap

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def _scorer(self):
        """The pipeline as an array scorer (``models.scorer``), built on first use and never
        pickled with the model; None when the pipeline's layout is not one it knows."""
        if not hasattr(self, "_array_scorer"):
            from mlops_assets.lib.models.scorer import array_scorer

            # a recalibrated model (lib.calibration.Recalibrated): its base pipeline, then its map
            self._array_scorer = array_scorer(getattr(self.pipeline, "base", self.pipeline))
        return self._array_scorer

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_array_scorer", None)
        return state

    # Rows scored per call: bounds the memory of the intermediate matrices (the encoded rows of
    # 64k flights are ~75 MB; a sparse one-hot block and its stacked copy for 1M rows through the
    # Pipeline were over 1 GB, and 3.3-3.6 s on a cold allocator). 1M rows through the array
    # scorer: 0.54-0.61 s for chunks of 16k to 128k rows (bench B5).
    CHUNK_ROWS = 65_536

    def predict(self, context, model_input, params=None):
        import numpy as np

        from mlops_assets.lib.features import InputError, check_scoring_input

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        # Behind `mlflow models serve` a request must match the contract exactly (no extra
        # fields) and stay under the row limit; in batch, lake rows carry their id columns.
        serving = os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"
        if serving and not FlightDelayModel._heap_frozen:
            _freeze_heap()
        try:
            rows = check_scoring_input(df, allow_extra_columns=not serving,
                                       max_rows=serving_max_rows() if serving else None)
        except InputError as exc:
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(f"bad scoring input: {exc}") from None
        n = self.CHUNK_ROWS
        scorer = self._scorer()
        if scorer is not None:
            cats = rows.cat_matrix()
            parts = [scorer.predict_proba(cats[i:i + n], rows.nums[i:i + n]) for i in range(0, len(cats), n)]
            if hasattr(self.pipeline, "adjust"):
                parts = [self.pipeline.adjust(q) for q in parts]
        else:  # a pipeline of another layout: the pipeline itself, on what feature_matrix(df) gives
            X = rows.frame()
            parts = [self.pipeline.predict_proba(X.iloc[i:i + n])[:, 1] for i in range(0, len(X), n)]
        p = np.concatenate(parts) if parts else np.empty(0)
        return pd.DataFrame({"delay_probability": p.astype("float64")})


def pip_requirements(family: str) -> list[str]:
    import numpy
    import sklearn

    reqs = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={numpy.__version__}", "mlops-assets"]
    if family == "torch_mlp":
        import torch

        reqs.append(f"torch=={torch.__version__.split('+')[0]}")
    return reqs


def log_model(run_id: str, pipeline, family: str, example: pd.DataFrame, reference: dict) -> str:
    """Log the pipeline as a pyfunc model (its input contract in the MLmodel metadata), an input
    example and the drift reference into ``run_id``; returns the model URI to register."""
    from mlops_assets.lib.features import CATEGORICAL_CONTRACT, NUMERIC_CONTRACT, feature_matrix

    X = feature_matrix(example)
    wrapper = FlightDelayModel(pipeline)
    wrapper.predict(None, X)  # the example scores
    import warnings

    # No MLflow signature (nor an input example, from which MLflow would infer one): with a
    # signature, MLflow's scoring server drops unexpected fields silently and lets through what
    # the model then cannot use; the model checks its own, stricter contract (in the MLmodel's
    # metadata) and answers 400 with the column and rows at fault.
    contract = {"columns": list(X.columns),
                "numeric": {c: {"min": lo, "max": hi, "missing_allowed": n} for c, (lo, hi, n) in NUMERIC_CONTRACT.items()},
                "categorical": CATEGORICAL_CONTRACT, "max_rows_per_request": serving_max_rows()}
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints.*")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=wrapper, pip_requirements=pip_requirements(family),
            metadata={"input_contract": contract},
        )
        mlflow.log_dict(reference, "drift_reference.json")
        mlflow.log_dict(X.to_dict(orient="split"), "input_example.json")
    return info.model_uri


def register(model_uri: str, tags: dict[str, Any], alias: str | None = None) -> str:
    """Register a version of ``flight_delay`` with ``tags``; returns the version number."""
    client = MlflowClient()
    try:
        client.get_registered_model(MODEL_NAME)
    except mlflow.exceptions.MlflowException:
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.create_registered_model(
                MODEL_NAME, description="Probability that a NYC departure arrives more than 15 minutes late.")
    # MLflow 3 logs models as `models:/m-<id>`; a tracking *server* needs that id passed along
    # (the SQLite store resolves it itself) — found by the remote-server outage test.
    mv = client.create_model_version(MODEL_NAME, model_uri, run_id=tags.get("mlflow_run_id"),
                                     tags={k: str(v) for k, v in tags.items()},
                                     model_id=m.group(1) if (m := _LOGGED_MODEL_URI.match(model_uri)) else None)
    for _ in range(60):  # wait until READY (instant on SQLite, async on some servers)
        if client.get_model_version(MODEL_NAME, mv.version).status == "READY":
            break
        time.sleep(0.5)
    if alias:
        client.set_registered_model_alias(MODEL_NAME, alias, mv.version)
    return str(mv.version)


def alias_version(alias: str = CHAMPION):
    """The model version behind ``alias``, or None."""
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except mlflow.exceptions.MlflowException:
        return None


def set_alias(alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(MODEL_NAME, alias, str(version))


class PromotionConflict(RuntimeError):
    """``champion`` moved between the gate's comparison and the promotion."""


class RollbackError(ValueError):
    pass


LOCK_KEY = 0x6D6C6F7073  # "mlops": the PostgreSQL advisory lock that guards the champion alias
LOCK_TIMEOUT_S = 300


def lock_url() -> str:
    """The PostgreSQL database whose advisory lock serialises moves of ``champion`` on a shared
    (remote) registry: ``MLOPS_PROMOTION_LOCK_URL``, else the Dagster instance's own
    ``DAGSTER_PG_URL`` (deploy/dagster.yaml), which every run, the daemon and ``mlops-rollback``
    reach already."""
    return os.environ.get("MLOPS_PROMOTION_LOCK_URL") or os.environ.get("DAGSTER_PG_URL", "")


@contextlib.contextmanager
def _pg_advisory_lock(url: str, timeout_s: float = LOCK_TIMEOUT_S):
    """``pg_advisory_lock`` on its own connection: held until released or until the connection
    ends (a killed holder frees it)."""
    import psycopg2

    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    conn = psycopg2.connect(dsn, connect_timeout=10, application_name="mlops-champion-lock")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + timeout_s
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the champion lock (PostgreSQL advisory lock {LOCK_KEY}) was not free "
                                       f"within {timeout_s:.0f}s")
                time.sleep(0.2)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


def _alias_lock():
    """Serialises every move of ``champion`` (promotion, shadow promotion, rollback) between
    processes: on a local SQLite store a file lock beside the database; on a shared server a
    PostgreSQL advisory lock (:func:`lock_url`).  Without either (a remote server and no
    PostgreSQL named), the compare-then-set in :func:`promote` narrows the race to one round trip."""
    db = _sqlite_path(mlflow.get_tracking_uri())
    if db:
        return _file_lock(db.with_suffix(".champion.lock"))
    url = lock_url()
    if url.startswith("postgresql"):
        return _pg_advisory_lock(url)
    log.warning("champion moves are not serialised: a remote MLflow server and no PostgreSQL lock "
                "(set MLOPS_PROMOTION_LOCK_URL or DAGSTER_PG_URL)")
    return contextlib.nullcontext()


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def promote(version: str, *, expected_current: str | None, tags: dict[str, Any],
            regate=None) -> tuple[str, str] | None:
    """Move ``champion`` to ``version`` if it still points where the gate looked
    (``expected_current``, None for "no champion"); returns (the previous version or "none", when).

    All under the champion lock.  If another promotion or a rollback moved it meanwhile, the
    gate's comparison is stale: with ``regate`` (a function of the current champion's version
    returning ``(promote, reason)``) the challenger is gated again against the current champion,
    still under the lock, and promoted only if it passes (None when it does not: nothing moves);
    without it, :class:`PromotionConflict` is raised."""
    with _alias_lock():
        current = alias_version(CHAMPION)
        now = str(current.version) if current is not None else None
        extra: dict[str, Any] = {}
        if now != str(version) and now != (str(expected_current) if expected_current else None):
            stale = (f"the gate compared v{version} with champion "
                     f"{'v' + str(expected_current) if expected_current else '(none)'}, but champion is now v{now}")
            if regate is None:
                raise PromotionConflict(f"not promoting v{version}: {stale}; re-run the challenger to gate it "
                                        "against the current champion")
            ok, why = regate(now)
            extra = {"regated_against": now or "none", "regate_decision": why[:5000]}
            if not ok:
                set_version_tags(version, {**extra, "regated_at": _now()})
                log.info("not promoting v%s: %s; gated again: %s", version, stale, why)
                return None
            log.info("%s; gated again and passed: %s", stale, why)
        if now != str(version):
            set_alias(CHAMPION, version)
        when = _now()
        set_version_tags(version, {"promoted_at": when, "previous_champion": now or "none", **extra, **tags})
        return now or "none", when


def rollback(to: str | None = None, *, by: str, reason: str) -> dict[str, str]:
    """Move ``champion`` back to the version it replaced (its ``previous_champion`` tag) or to
    version ``to``; records who and why on both versions. Refuses versions the gate blocked,
    versions that do not exist and a no-op."""
    client = MlflowClient()
    with _alias_lock():
        current = alias_version(CHAMPION)
        if current is None:
            raise RollbackError("there is no champion to roll back")
        cur = str(current.version)
        target = str(to) if to else current.tags.get("previous_champion", "none")
        if target in ("", "none"):
            raise RollbackError(f"champion v{cur} replaced no earlier version; name one with --to VERSION")
        try:
            mv = client.get_model_version(MODEL_NAME, target)
        except mlflow.exceptions.MlflowException:
            raise RollbackError(f"version {target} of {MODEL_NAME!r} does not exist") from None
        if target == cur:
            raise RollbackError(f"v{target} is already the champion")
        if mv.status != "READY":
            raise RollbackError(f"v{target} is not READY ({mv.status})")
        if mv.tags.get("gate") == "blocked":
            raise RollbackError(f"v{target} was blocked by the gate ({mv.tags.get('gate_decision', '')}); "
                                "refusing to make it champion")
        when = _now()
        set_alias(CHAMPION, target)
        set_version_tags(target, {"rolled_back_at": when, "rolled_back_by": by, "rollback_reason": reason,
                                  "rolled_back_from": cur, "previous_champion": cur})
        set_version_tags(cur, {"demoted_at": when, "demoted_by": by, "demotion_reason": reason})
        return {"from": cur, "to": target, "at": when, "by": by, "reason": reason, "week": mv.tags.get("week", "")}


def set_version_tags(version: str, tags: dict[str, Any]) -> None:
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(MODEL_NAME, str(version), k, str(v))


def version_uri(version: str | int) -> str:
    return f"models:/{MODEL_NAME}/{version}"


def check_model_uri(uri: str) -> str:
    """Refuse model URIs outside our own registry (loading a model unpickles code)."""
    if not _VERSION_URI.match(uri):
        raise ValueError(f"refusing to load model {uri!r}: only models:/{MODEL_NAME}/<version> from our registry")
    return uri


_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def load_version(version: str | int):
    """Load ``flight_delay`` version ``version`` as a pyfunc (cached per process)."""
    uri = check_model_uri(version_uri(version))
    key = (mlflow.get_tracking_uri(), uri)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = mlflow.pyfunc.load_model(uri)
    return _MODEL_CACHE[key]


def load_reference(version: str | int) -> dict:
    mv = MlflowClient().get_model_version(MODEL_NAME, str(version))
    return mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/drift_reference.json")


def input_example(version: str | int) -> pd.DataFrame:
    """The input example logged with a version (for smoke tests)."""
    mv = MlflowClient().get_model_version(MODEL_NAME, str(version))
    try:
        split = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/input_example.json")
        return pd.DataFrame(split["data"], columns=split["columns"])
    except (mlflow.exceptions.MlflowException, OSError):  # versions logged before the example moved out of the MLmodel
        from mlflow.models import Model

        local = mlflow.artifacts.download_artifacts(check_model_uri(version_uri(version)))
        return Model.load(os.path.join(local, "MLmodel")).load_input_example(local)
