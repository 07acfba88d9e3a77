"""Feature and output drift: PSI per feature, alarmed against thresholds calibrated on the
reference's own variability (no Dagster here).

The reference is computed at training time from the training rows and stored with the model:
numeric features keep quantile bin edges, the reference proportions and a sample of values;
categorical features keep their category proportions; the model's output (its predicted delay
probability on the same rows) is kept like a numeric feature.  Numeric features also get the
Kolmogorov-Smirnov statistic and the Wasserstein distance (in reference standard deviations), as
numbers to plot.

**The alarm.** A fixed PSI threshold (0.25 is the textbook "major") is meaningless here: every
flight of an hour shares that hour's weather, so a week holds a few dozen independent weather
values and a week taken from *inside* the training window has a temperature PSI of up to 4.
Each feature's threshold is therefore the ``quantile`` of its PSI over a moving-block bootstrap
of the training window, where the blocks are whole days and a replicate is ``window_days``
consecutive days (the monitored window: 7 days).  Consecutive days share their weather, so
replicates of independent days understate the spread: measured on four 6-week windows of 2013,
such replicates put 2.4-3.7% of in-window weeks' features above their 99% quantile.
The threshold never goes below ``PSI_MODERATE`` (0.1: "no change" stays no change).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_assets.settings import PSI_MAJOR  # noqa: F401  (the textbook "major" shift, defined once)

EPS = 1e-4
PSI_MODERATE = 0.1


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """Population stability index of two proportion vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.clip(e / e.sum(), eps, None) if e.sum() > 0 else np.full_like(e, eps)
    a = np.clip(a / a.sum(), eps, None) if a.sum() > 0 else np.full_like(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    qs = np.unique(np.nanquantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return qs


def _proportions_numeric(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    v = values[~np.isnan(values)]
    idx = np.searchsorted(edges, v, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    missing = float(np.isnan(values).sum())
    return np.append(counts, missing)


OUTPUT = "delay_probability"  # the model's output, monitored like a numeric feature


def _psi_rows(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``psi`` of one expected vector against each row of ``actual``."""
    e = np.clip(expected / expected.sum(), eps, None)
    tot = actual.sum(axis=1, keepdims=True)
    a = np.clip(np.divide(actual, tot, out=np.zeros_like(actual), where=tot > 0), eps, None)
    return ((a - e) * np.log(a / e)).sum(axis=1)


def _numeric_entry(v: np.ndarray, n_bins: int, sample: int, rng) -> dict:
    finite = v[~np.isnan(v)]
    edges = _numeric_bins(finite, n_bins) if len(finite) else np.array([])
    smp = rng.choice(finite, size=min(sample, len(finite)), replace=False) if len(finite) else finite
    return {"edges": edges.tolist(), "counts": _proportions_numeric(v, edges).tolist(),
            "sample": np.sort(smp).tolist(), "std": float(np.std(finite)) if len(finite) else 0.0}


def _categorical_counts(values: pd.Series, cats: list[str]) -> np.ndarray:
    cur = values.astype(str).value_counts()
    return np.append(cur.reindex(cats, fill_value=0).to_numpy(dtype=float), float(cur.drop(cats, errors="ignore").sum()))


def block_bootstrap_thresholds(df: pd.DataFrame, ref: dict, *, day_col: str = "date", window_days: int = 7,
                               n_boot: int = 1000, quantile: float = 0.99, seed: int = 0) -> dict[str, float]:
    """Each reference entry's alarm threshold: the ``quantile`` of the PSI of ``n_boot`` replicates of
    ``window_days`` consecutive days of ``df`` (moving blocks of whole days) against the reference,
    floored at ``PSI_MODERATE``.  A window of fewer than ``window_days`` days (a cold start on a
    short history) has no week-to-week variability to measure: its replicates draw
    ``window_days`` days independently, with replacement (which understates the spread).  Empty
    for fewer than 2 days."""
    days = np.array(sorted(df[day_col].unique()))
    if len(days) < 2:
        return {}
    rng = np.random.default_rng(seed)
    if len(days) >= window_days:
        starts = rng.integers(0, len(days) - window_days + 1, n_boot)
        idx = starts[:, None] + np.arange(window_days)[None, :]
    else:
        idx = rng.integers(0, len(days), (n_boot, window_days))
    groups = {d: g for d, g in df.groupby(day_col)}
    out: dict[str, float] = {}

    def put(name: str, expected, per_day: np.ndarray) -> None:
        reps = _psi_rows(np.asarray(expected, dtype=float), per_day[idx].sum(axis=1))
        out[name] = max(PSI_MODERATE, float(np.quantile(reps, quantile)))

    for c, r in ref["numeric"].items():
        edges = np.asarray(r["edges"], dtype=float)
        put(c, r["counts"], np.stack([_proportions_numeric(groups[d][c].to_numpy(dtype=float), edges) for d in days]))
    for c, counts in ref["categorical"].items():
        cats = sorted(counts)
        put(c, [counts[k] for k in cats] + [0.0],
            np.stack([_categorical_counts(groups[d][c], cats) for d in days]))
    return out


def build_reference(df: pd.DataFrame, numeric: list[str], categorical: list[str],
                    n_bins: int = 10, sample: int = 2000, seed: int = 0, *,
                    output: np.ndarray | None = None, importance: dict[str, float] | None = None,
                    day_col: str = "date", window_days: int = 7) -> dict:
    """The drift reference of the training rows ``df``: bins, proportions and a sample per numeric
    feature, category counts per categorical one, the model's ``output`` on the same rows (if
    given) and each feature's ``importance`` to the model (if given).  When ``df`` has a
    ``day_col`` spanning at least ``window_days`` days, every entry also gets its calibrated
    alarm threshold (``thresholds``)."""
    rng = np.random.default_rng(seed)
    ref: dict = {"numeric": {}, "categorical": {}, "rows": int(len(df))}
    for c in numeric:
        ref["numeric"][c] = _numeric_entry(df[c].to_numpy(dtype=float), n_bins, sample, rng)
    for c in categorical:
        counts = df[c].astype(str).value_counts()
        ref["categorical"][c] = {str(k): int(v) for k, v in counts.items()}
    if output is not None:
        ref["output"] = {OUTPUT: _numeric_entry(np.asarray(output, dtype=float), n_bins, sample, rng)}
    if importance is not None:
        ref["importance"] = {k: float(v) for k, v in importance.items()}
    if day_col in df:
        frame = df
        if output is not None:
            frame = df.assign(**{OUTPUT: np.asarray(output, dtype=float)})
        both = {"numeric": {**ref["numeric"], **ref.get("output", {})}, "categorical": ref["categorical"]}
        ref["thresholds"] = block_bootstrap_thresholds(frame, both, day_col=day_col, window_days=window_days)
        ref["threshold_method"] = (f"PSI 99% quantile of a moving-block bootstrap of {window_days} consecutive "
                                   f"days of the training rows (floor {PSI_MODERATE})")
    return ref


def drift_report(ref: dict, df: pd.DataFrame, output: np.ndarray | None = None) -> pd.DataFrame:
    """One row per feature (and one for the model's ``output``, when given and in the reference):
    PSI, its alarm ``threshold`` (calibrated, or ``PSI_MAJOR`` for a reference without one),
    ``alarm``, ``level`` (major = alarm, moderate = above half the threshold), the feature's
    ``importance``, and (numeric) KS statistic/p-value and Wasserstein distance."""
    from scipy import stats

    rows = []
    numeric = dict(ref["numeric"])
    if output is not None and ref.get("output"):
        df = df.assign(**{OUTPUT: np.asarray(output, dtype=float)})
        numeric.update(ref["output"])
    for c, r in numeric.items():
        if c not in df:
            continue
        v = df[c].to_numpy(dtype=float)
        edges = np.asarray(r["edges"], dtype=float)
        actual = _proportions_numeric(v, edges)
        value = psi(np.asarray(r["counts"]), actual)
        finite = v[~np.isnan(v)]
        sample = np.asarray(r["sample"], dtype=float)
        if len(finite) and len(sample):
            # the asymptotic p-value: the exact one costs 15 ms a feature at these sizes (2,000 x ~6,000)
            # and differs in the fourth decimal
            ks = stats.ks_2samp(sample, finite, method="asymp")
            wd = stats.wasserstein_distance(sample, finite) / (r["std"] or 1.0)
            ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
        else:
            ks_stat = ks_p = wd = float("nan")
        rows.append({"feature": c, "kind": "output" if c == OUTPUT else "numeric", "psi": value, "ks_stat": ks_stat, "ks_pvalue": ks_p,
                     "wasserstein_std": float(wd)})
    for c, counts in ref["categorical"].items():
        if c not in df:
            continue
        cur = df[c].astype(str).value_counts()
        cats = sorted(set(counts) | set(cur.index))
        e = np.array([counts.get(k, 0) for k in cats], dtype=float)
        a = np.array([cur.get(k, 0) for k in cats], dtype=float)
        rows.append({"feature": c, "kind": "categorical", "psi": psi(e, a), "ks_stat": np.nan,
                     "ks_pvalue": np.nan, "wasserstein_std": np.nan})
    out = pd.DataFrame(rows)
    if len(out):
        thresholds, importance = ref.get("thresholds", {}), ref.get("importance", {})
        out["threshold"] = [float(thresholds.get(f, PSI_MAJOR)) for f in out["feature"]]
        out["alarm"] = out["psi"] > out["threshold"]
        out["level"] = np.select([out["alarm"], out["psi"] > out["threshold"] / 2], ["major", "moderate"], "none")
        out["importance"] = [float(importance.get(f, np.nan)) for f in out["feature"]]
    return out


def alarm_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Drift rows as this module writes them now, also from files written before the calibrated
    thresholds (no ``threshold``/``alarm``/``kind``/``importance``: the fixed PSI_MAJOR decides)."""
    rows = rows.copy()
    if "threshold" not in rows:
        rows["threshold"] = PSI_MAJOR
    rows["threshold"] = rows["threshold"].fillna(PSI_MAJOR)
    if "alarm" not in rows:
        rows["alarm"] = rows["psi"] > rows["threshold"]
    if "kind" not in rows:
        rows["kind"] = "numeric"
    if "importance" not in rows:
        rows["importance"] = np.nan
    return rows


def weighted_alarm_share(rows: pd.DataFrame) -> float:
    """The share of the features' importance that is in alarm (the output row left out); plain
    share of features when the reference has no importances."""
    feats = rows[rows["kind"] != "output"]
    if not len(feats):
        return float("nan")
    w = feats["importance"].to_numpy(dtype=float) if "importance" in feats else np.full(len(feats), np.nan)
    if not np.isfinite(w).any() or np.nansum(np.clip(w, 0, None)) <= 0:
        w = np.ones(len(feats))
    w = np.clip(np.nan_to_num(w), 0, None)
    return float((w * feats["alarm"].to_numpy(dtype=bool)).sum() / w.sum())
