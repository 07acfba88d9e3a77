"""The model registry (no Dagster here; import this module lazily): logging a model with its
drift reference, registering versions with their lineage tags, the aliases (``champion``,
``challenger``), promotion and rollback under the champion lock, and loading versions.

* The registered model ``flight_delay`` takes ``flight_features`` rows and returns a
  ``delay_probability`` column (``serving_model.FlightDelayModel``).  Aliases replace stages.
* Models are loaded only from our own registry (``models:/flight_delay/<version>``): loading an
  MLflow model unpickles code.
* Tracking (runs, metrics, the store's configuration) is ``lib.tracking``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops_assets.lib.serving_model import FlightDelayModel, pip_requirements, serving_max_rows
from mlops_assets.lib.tracking import _file_lock, _sqlite_path
from mlops_assets.settings import MODEL_NAME

# Versions registered before the split pickled their model as mlops_assets.lib.registry.FlightDelayModel:
# the name must stay importable from here for them to load.
__all__ = ["FlightDelayModel"]

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")
_VERSION_URI = re.compile(rf"^models:/{MODEL_NAME}/(\d+|@{CHAMPION}|@{CHALLENGER})$")


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
    from mlops_assets.settings import get_settings

    return get_settings().promotion_lock_url


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


class SmokeTestFailed(RuntimeError):
    pass


def smoke_test(version: str | int) -> np.ndarray:
    """Load ``version`` from the registry and score its logged input example: the probabilities,
    or ``SmokeTestFailed`` when there are not one per row, each in [0, 1]."""
    example = input_example(version)
    p = load_version(version).predict(example)["delay_probability"].to_numpy()
    if len(p) != len(example) or not np.all((p >= 0) & (p <= 1)):
        raise SmokeTestFailed(f"smoke test of v{version} returned invalid probabilities {p}")
    return p
