"""Classification metrics and the promotion gate (no Dagster here)."""

from __future__ import annotations

import dataclasses

import numpy as np


def classification_metrics(y_true, p) -> dict[str, float]:
    """ROC AUC, log loss, Brier score, and predicted vs actual positive rate."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    out = {
        "n": float(len(y)),
        "actual_rate": float(y.mean()) if len(y) else float("nan"),
        "predicted_rate": float(p.mean()) if len(p) else float("nan"),
    }
    if len(y) and 0 < y.sum() < len(y):
        out["roc_auc"] = float(roc_auc_score(y, p))
        out["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
    else:  # one class only: AUC undefined
        out["roc_auc"] = float("nan")
        out["log_loss"] = float("nan")
    out["brier"] = float(brier_score_loss(y, p)) if len(y) else float("nan")
    return out


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The gate, stated as MLflow's ``MetricThreshold``: an absolute floor plus a minimum change
    against the champion on the same data.  With no champion, the floor alone decides."""

    challenger_auc: float
    champion_auc: float | None
    min_auc: float
    min_delta: float

    @property
    def passes_floor(self) -> bool:
        return bool(np.isfinite(self.challenger_auc) and self.challenger_auc >= self.min_auc)

    @property
    def beats_champion(self) -> bool:
        if self.champion_auc is None or not np.isfinite(self.champion_auc):
            return True
        return bool(np.isfinite(self.challenger_auc) and self.challenger_auc >= self.champion_auc + self.min_delta)

    @property
    def promote(self) -> bool:
        return self.passes_floor and self.beats_champion

    def describe(self) -> str:
        champ = "no champion" if self.champion_auc is None else f"champion AUC {self.champion_auc:.4f}"
        verdict = "PROMOTE" if self.promote else "BLOCK"
        return (f"{verdict}: challenger AUC {self.challenger_auc:.4f} (floor {self.min_auc:.2f}: "
                f"{'pass' if self.passes_floor else 'fail'}); {champ}, min delta {self.min_delta:+.4f}: "
                f"{'pass' if self.beats_champion else 'fail'}")
