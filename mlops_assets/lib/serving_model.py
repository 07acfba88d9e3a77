"""The registered model as it serves: ``FlightDelayModel``, the MLflow pyfunc that takes
``flight_features`` rows as they are (its own input contract checked, rows scored by the array
scorer of ``models.scorer``) and returns ``delay_probability`` (no Dagster here)."""

from __future__ import annotations

import os

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


def serving_max_rows() -> int:
    """Rows allowed in one online scoring request (``MLOPS_SERVING_MAX_ROWS``, default 10,000)."""
    from mlops_assets.settings import get_settings

    return get_settings().serving_max_rows


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
        return pd.DataFrame({"delay_probability": self.score(rows)})

    def score(self, rows):
        """Delay probabilities (float64) of rows that passed the contract (a ``ScoringInput``)."""
        import numpy as np

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
        return p.astype("float64")


def pip_requirements(family: str) -> list[str]:
    import numpy
    import sklearn

    reqs = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={numpy.__version__}", "mlops-assets"]
    if family == "torch_mlp":
        import torch

        reqs.append(f"torch=={torch.__version__.split('+')[0]}")
    return reqs
