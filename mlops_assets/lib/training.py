"""Training sets, trials and scoring (no Dagster here; sklearn/torch imported lazily)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib.features import LABEL, feature_matrix
from mlops_assets.lib.metrics import classification_metrics

log = logging.getLogger(__name__)
HOLDOUT_DAYS = 7
VALID_DAYS = 7


class TrainingSetError(ValueError):
    pass


def training_window_days(week: str, weeks: int, first_day: str) -> list[str]:
    """The days a weekly training set reads: ``weeks`` weeks ending with the week starting on
    ``week`` (YYYY-MM-DD), none before ``first_day``."""
    from datetime import date, timedelta

    end = date.fromisoformat(week) + timedelta(days=7)
    first = max(end - timedelta(weeks=weeks), date.fromisoformat(first_day[:10]))
    return [(first + timedelta(days=i)).isoformat() for i in range((end - first).days)]


def make_training_set(examples: pd.DataFrame, *, holdout_days: int = HOLDOUT_DAYS,
                      valid_days: int = VALID_DAYS, shuffle_labels_seed: int | None = None,
                      break_features: tuple[str, ...] = (), break_seed: int = 11) -> pd.DataFrame:
    """Labelled examples with a ``split`` column, split by time (never at random):

    * ``holdout``: the last ``holdout_days`` days (out-of-time; the gate scores here),
    * ``valid``: the ``valid_days`` before it (trials are compared here),
    * ``train``: everything earlier.

    ``shuffle_labels_seed`` sabotages the train and valid labels (never the holdout's), and
    ``break_features`` the named feature columns (shuffled across the train and valid rows, as a
    broken feature pipeline would): drills that prove the gate stops a bad model.
    """
    df = examples[examples[LABEL].notna()].copy()
    days = sorted(df["date"].unique())
    if len(days) < holdout_days + 2:
        raise TrainingSetError(
            f"training set needs at least {holdout_days + 2} labelled days, found {len(days)} "
            f"({days[0] if days else '-'}..{days[-1] if days else '-'})"
        )
    holdout = set(days[-holdout_days:])
    rest = days[:-holdout_days]
    v = valid_days if len(rest) >= 2 * valid_days else max(1, len(rest) // 4)
    valid = set(rest[-v:])
    df["split"] = np.where(df["date"].isin(holdout), "holdout", np.where(df["date"].isin(valid), "valid", "train"))
    if shuffle_labels_seed is not None:
        mask = df["split"] != "holdout"
        rng = np.random.default_rng(shuffle_labels_seed)
        df.loc[mask, LABEL] = rng.permutation(df.loc[mask, LABEL].to_numpy())
    if break_features:
        unknown = sorted(set(break_features) - set(df.columns))
        if unknown:
            raise TrainingSetError(f"break_features: unknown column(s) {unknown}")
        mask = (df["split"] != "holdout").to_numpy()
        rng = np.random.default_rng(break_seed)
        for col in break_features:
            df.loc[mask, col] = rng.permutation(df.loc[mask, col].to_numpy())
    df[LABEL] = df[LABEL].astype("int64")
    return df.sort_values(["date", "flight_id"]).reset_index(drop=True)


@dataclasses.dataclass
class TrialResult:
    family: str
    params: dict[str, Any]
    model: Any
    valid_metrics: dict[str, float]
    fit_seconds: float
    train_rows: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def log_fields(self, usage: dict[str, float] | None = None) -> dict[str, dict]:
        """What a trial's MLflow run records (``tracking.log_batch`` keyword arguments): its
        parameters, valid metrics, fit time and size, float extras, the step's ``usage``."""
        metrics = {f"valid_{k}": v for k, v in self.valid_metrics.items()}
        metrics.update({"fit_seconds": self.fit_seconds, "train_rows": self.train_rows})
        metrics.update({k: v for k, v in self.extra.items() if isinstance(v, float)})
        metrics.update({f"step_{k}": v for k, v in (usage or {}).items()})
        return {"params": {"family": self.family, **self.params}, "metrics": metrics,
                "tags": {"device": str(self.extra.get("device", "cpu"))}}


def predict_proba(model, df: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(feature_matrix(df))[:, 1], dtype=float)


def train_trial(family: str, params: dict[str, Any], training_set: pd.DataFrame, *, seed: int = 0,
                device: str | None = None) -> TrialResult:
    """Fit one family with one set of hyperparameters on ``train``; score it on ``valid``."""
    from mlops_assets.lib.models import make_pipeline

    train = training_set[training_set["split"] == "train"]
    valid = training_set[training_set["split"] == "valid"]
    log.info("trial %s %s: %d train rows, %d valid rows", family, params, len(train), len(valid))
    pipe = make_pipeline(family, params, seed=seed, device=device)
    t0 = time.perf_counter()
    pipe.fit(feature_matrix(train), train[LABEL].to_numpy())
    fit_s = time.perf_counter() - t0
    metrics = classification_metrics(valid[LABEL].to_numpy(), predict_proba(pipe, valid))
    extra: dict[str, Any] = {}
    est = pipe.named_steps["model"]
    for attr, key in (("device_", "device"), ("train_rows_per_s_", "train_rows_per_s"),
                      ("fit_seconds_", "train_loop_seconds"), ("n_iter_", "n_iter")):
        if hasattr(est, attr):
            val = getattr(est, attr)
            extra[key] = val if isinstance(val, str) else float(np.ravel(val)[0])
    scores = getattr(est, "validation_score_", None)  # HistGradientBoosting: one per iteration
    if scores is not None:
        for i in range(0, len(scores), 10):
            log.info("%s iteration %d/%d: validation score %.4f", family, i, len(scores) - 1, scores[i])
    if hasattr(est, "n_iter_"):
        log.info("%s converged after %d iteration(s)", family, int(np.ravel(est.n_iter_)[0]))
    log.info("trial %s %s: valid AUC %.4f in %.1fs", family, params, metrics["roc_auc"], fit_s)
    return TrialResult(family, dict(params), pipe, metrics, fit_s, len(train), extra)


IMPORTANCE_ROWS = 1500
IMPORTANCE_REPEATS = 4


def feature_importance_with_error(model, rows: pd.DataFrame, features: list[str], *,
                                  repeats: int = IMPORTANCE_REPEATS, max_rows: int | None = IMPORTANCE_ROWS,
                                  seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """Permutation importance of each of ``features`` for ``model`` on ``rows`` (labelled): the mean
    drop of ROC AUC when the column is shuffled (scikit-learn's ``permutation_importance``),
    floored at 0, and its standard error.  Each repeat draws its own ``max_rows`` rows (all rows
    when fewer) and shuffles each column once on them, so the spread across repeats holds both the
    rows' sampling and the shuffle's noise: the error is their standard deviation over
    sqrt(repeats).  On a week's holdout (~6,000 rows) 4
    repeats of 1,500 rows cost a third of 3 repeats of every row."""
    from sklearn.inspection import permutation_importance

    X = feature_matrix(rows)
    y = rows[LABEL].to_numpy()
    if len(np.unique(y)) < 2:
        return {f: float("nan") for f in features}, {f: float("nan") for f in features}
    rng = np.random.default_rng(seed)
    n = len(X) if max_rows is None else min(max_rows, len(X))
    drops = []
    for r in range(repeats):
        # scikit-learn's own ``max_samples`` draws one subset per feature and scores the baseline
        # on every row: each repeat here is its own sample, baseline and shuffle on the same rows
        idx = np.sort(rng.choice(len(X), size=n, replace=False)) if n < len(X) else np.arange(len(X))
        if len(np.unique(y[idx])) < 2:
            continue
        res = permutation_importance(model, X.iloc[idx], y[idx], scoring="roc_auc", n_repeats=1,
                                     random_state=seed + r)
        drops.append(res.importances[:, 0])
    if not drops:
        return {f: float("nan") for f in features}, {f: float("nan") for f in features}
    d = np.vstack(drops)
    mean = dict(zip(X.columns, d.mean(axis=0)))
    se = dict(zip(X.columns, d.std(axis=0, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.full(d.shape[1], np.nan)))
    return ({f: max(0.0, float(mean.get(f, 0.0))) for f in features},
            {f: float(se.get(f, float("nan"))) for f in features})


def feature_importance(model, rows: pd.DataFrame, features: list[str], *, repeats: int = IMPORTANCE_REPEATS,
                       max_rows: int | None = IMPORTANCE_ROWS, seed: int = 0) -> dict[str, float]:
    """The means of ``feature_importance_with_error``: the drift verdict weighs each feature's
    alarm by them."""
    return feature_importance_with_error(model, rows, features, repeats=repeats, max_rows=max_rows, seed=seed)[0]


def score_split(model, training_set: pd.DataFrame, split: str = "holdout") -> dict[str, float]:
    part = training_set[training_set["split"] == split]
    return classification_metrics(part[LABEL].to_numpy(), predict_proba(model, part))
