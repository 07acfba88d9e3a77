"""Scoring with a fitted family pipeline on plain arrays (no Dagster here).

A registered model is a scikit-learn ``Pipeline``: a ``ColumnTransformer`` (categorical encoder,
numeric imputation/scaling) and an estimator.  Called as a whole it pays for pandas at every
step: one online request of one row costs ~3.7 ms of CPU there (``feature_matrix`` 1.3 ms, the
``ColumnTransformer``'s pandas handling 1.6 ms; the arithmetic is well under 1 ms), and a batch
encodes every row's codes one string at a time.  :class:`ArrayScorer` calls the *same fitted
objects* (each sub-transformer of the ``ColumnTransformer``, then the estimator) on NumPy arrays:

* the categorical encoder sees each distinct row of codes once (a day has ~300 distinct
  carrier/origin/destination rows among ~1,000 flights; 2013 has 439), and its outputs are kept
  per distinct row, so an online request is nearly always a lookup;
* the numeric block and the estimator get the whole array, as in the pipeline.

An encoder maps each row on its own, so this computes what the pipeline computes;
``tests/unit/test_scorer.py`` checks it for every family on real rows with unknown codes and
missing values, one row at a time and in batches above the chunk size.

Only the layout our families use is supported (a ``ColumnTransformer`` over exactly the
categorical and the numeric feature columns, the rest dropped, then one estimator);
:func:`array_scorer` returns ``None`` for anything else and the caller uses the pipeline.
"""

from __future__ import annotations

import copy

import numpy as np

from mlops_assets.lib.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES


def _without_feature_names(est):
    """A copy of a fitted transformer that takes NumPy input without warning: it was fitted on
    named columns, and we pass it exactly those columns in that order (checked when built)."""
    est = copy.deepcopy(est)
    for part in [est] + [step for _, step in getattr(est, "steps", [])]:
        if "feature_names_in_" in vars(part):  # (a Pipeline's is a property of its first step)
            del part.feature_names_in_
    return est


def _distinct_rows(cats: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    """The distinct rows of a 2-D object array (as tuples) and, for each row, the index of its
    distinct row."""
    import pandas as pd

    if len(cats) <= 64:  # a request: plain Python is cheaper than pandas' setup
        first: dict[tuple, int] = {}
        inv = np.fromiter((first.setdefault(tuple(r), len(first)) for r in cats), np.intp, len(cats))
        return list(first), inv
    code = np.zeros(len(cats), np.int64)
    for j in range(cats.shape[1]):  # combine per-column codes, re-factorised to stay small
        c, uniques = pd.factorize(cats[:, j], use_na_sentinel=False)
        code = pd.factorize(code * (len(uniques) + 1) + c)[0]
    inv, _ = pd.factorize(code)
    some_row = np.empty(inv.max() + 1, np.intp)
    some_row[inv] = np.arange(len(inv))  # any row of each distinct one will do: they are equal
    return [tuple(r) for r in cats[some_row]], inv.astype(np.intp)


class ArrayScorer:
    # Encoded categorical rows kept per distinct row of codes: bounded (a one-hot row is ~1 KB,
    # so at most ~4 MB); emptied when full.
    CACHE_ROWS = 4096

    def __init__(self, blocks, estimator):
        self.blocks = blocks  # [(fitted transformer or "passthrough", "cat" | "num")]
        self.estimator = estimator
        self._encoded: list[dict] = [{} for _ in blocks]

    def _encode_cats(self, i: int, tr, cats: np.ndarray) -> np.ndarray:
        cache = self._encoded[i]
        keys, inv = _distinct_rows(cats)
        # one dict.get per key: a server's threads share the cache, and another may empty it
        # between an `in` and a `[]`
        found = {k: row for k in keys if (row := cache.get(k)) is not None}
        missing = [k for k in keys if k not in found]
        if missing:
            z = tr.transform(np.array(missing, dtype=object).reshape(len(missing), cats.shape[1]))
            z = z.toarray() if hasattr(z, "toarray") else np.asarray(z, dtype="float64")
            fresh = dict(zip(missing, z))
            found.update(fresh)
            if len(missing) <= self.CACHE_ROWS:
                if len(cache) + len(missing) > self.CACHE_ROWS:
                    cache.clear()
                cache.update(fresh)
        return np.vstack([found[k] for k in keys])[inv]

    def predict_proba(self, cats: np.ndarray, nums: np.ndarray) -> np.ndarray:
        """P(delayed) for rows given as ``cats`` (2-D object array, the categorical features in
        order) and ``nums`` (float64 array, the numeric features in order). Memory grows with
        the rows given: call it in chunks."""
        parts = []
        for i, (tr, which) in enumerate(self.blocks):
            if isinstance(tr, str):  # "passthrough"
                parts.append(cats if which == "cat" else nums)
            elif which == "cat":
                parts.append(self._encode_cats(i, tr, cats))
            else:
                z = tr.transform(nums)
                parts.append(z.toarray() if hasattr(z, "toarray") else np.asarray(z))
        Z = np.hstack(parts) if len(parts) > 1 else parts[0]
        if Z.dtype == object:
            Z = Z.astype("float64")
        return np.asarray(self.estimator.predict_proba(Z)[:, 1], dtype="float64")


def array_scorer(pipeline) -> ArrayScorer | None:
    """An :class:`ArrayScorer` for a fitted family pipeline, or ``None`` when its layout is not
    the one this scorer understands."""
    from sklearn.compose import ColumnTransformer

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2 or not isinstance(steps[0][1], ColumnTransformer):
        return None
    ct, est = steps[0][1], steps[1][1]
    # fitted, and its estimator fitted on arrays (as the ColumnTransformer gives by default)
    if not hasattr(ct, "transformers_") or hasattr(est, "feature_names_in_"):
        return None
    blocks = []
    for _name, tr, cols in ct.transformers_:
        cols = list(cols)
        if (isinstance(tr, str) and tr == "drop") or not cols:
            continue
        if cols == CATEGORICAL_FEATURES:
            which = "cat"
        elif cols == NUMERIC_FEATURES:
            which = "num"
        else:
            return None
        blocks.append((tr if isinstance(tr, str) else _without_feature_names(tr), which))
    if not blocks:
        return None
    return ArrayScorer(blocks, est)
