"""Shadow challengers (no Dagster here).

A registered version that passed the gate's floor but did not replace the champion (the paired
holdout test could not show it better) scores each day's batch beside the champion.  Its rows are
kept apart (``shadow_predictions``) and never served.  Once the outcomes land, both models are
compared on the *same* flights, paired (DeLong), day by day and pooled over the last ``days``
days: a shadow that is significantly better live for ``days`` days may be promoted
(``MLOPS_SHADOW_PROMOTE_DAYS``), which a single holdout week could not decide.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from mlops_assets.lib.metrics import classification_metrics, paired_auc_difference, paired_log_loss_difference


def eligible(version_tags: dict[str, str], *, champion: str | None, version: str, first_day: str) -> bool:
    """Whether a version may shadow on days from ``first_day``: not the champion, passed the
    floor (and infra validation, if it ran), and not trained on those days."""
    if champion is not None and str(version) == str(champion):
        return False
    if version_tags.get("gate_floor") != "passed" or version_tags.get("infra_validation"):
        return False
    data_end = version_tags.get("data_window", "").rpartition("..")[2]
    return not data_end or data_end < first_day


def joined(champion_rows: pd.DataFrame, shadow_rows: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The labelled flights both models scored: ``flight_id``, ``label``, ``p_champion``, ``p_shadow``."""
    j = (champion_rows[["flight_id", "delay_probability"]].rename(columns={"delay_probability": "p_champion"})
         .merge(shadow_rows[["flight_id", "delay_probability"]].rename(columns={"delay_probability": "p_shadow"}),
                on="flight_id", validate="one_to_one")
         .merge(labels[["flight_id", "label"]], on="flight_id", validate="one_to_one"))
    return j[j["label"].notna()].reset_index(drop=True)


def compare(j: pd.DataFrame) -> dict[str, float]:
    """Shadow against champion on the same flights: the paired AUC difference (shadow - champion)
    with its 95% interval, and both log losses."""
    y = j["label"].to_numpy(dtype=float)
    d = paired_auc_difference(y, j["p_shadow"].to_numpy(), j["p_champion"].to_numpy())
    ll = paired_log_loss_difference(y, j["p_shadow"].to_numpy(), j["p_champion"].to_numpy())
    return {"flights": int(len(j)), "log_loss_delta_ci_low": ll["log_loss_delta_ci_low"], "shadow_roc_auc": d["auc_challenger"], "champion_roc_auc": d["auc_champion"],
            "auc_delta": d["auc_delta"], "auc_delta_ci_low": d["auc_delta_ci_low"],
            "auc_delta_ci_high": d["auc_delta_ci_high"],
            "shadow_log_loss": classification_metrics(y, j["p_shadow"])["log_loss"],
            "champion_log_loss": classification_metrics(y, j["p_champion"])["log_loss"]}


@dataclasses.dataclass(frozen=True)
class ShadowDecision:
    promote: bool
    reason: str
    shadow: str | None
    champion: str | None
    days: tuple[str, ...] = ()
    comparison: dict = dataclasses.field(default_factory=dict)


def decide(by_day: dict[str, pd.DataFrame], *, shadow: str | None, champion: str | None, days: int,
           min_delta: float = 0.0, log_loss_tolerance: float = 0.01) -> ShadowDecision:
    """Promote ``shadow`` when, pooled over its latest ``days`` labelled days beside ``champion``
    (``by_day``: ``joined`` rows per day), the lower bound of the paired AUC difference is at least
    ``min_delta`` (and above 0) and its log loss is not shown worse than the champion's by more
    than ``log_loss_tolerance`` (lower 95% bound of the paired difference)."""
    if shadow is None or champion is None:
        return ShadowDecision(False, "no shadow" if shadow is None else "no champion", shadow, champion)
    window = sorted(d for d, j in by_day.items() if len(j))[-days:]
    if days < 1 or len(window) < days:
        return ShadowDecision(False, f"v{shadow} has {len(window)} of {days} labelled days beside v{champion}",
                              shadow, champion, tuple(window))
    c = compare(pd.concat([by_day[d] for d in window], ignore_index=True))
    span = f"{window[0]}..{window[-1]}, {c['flights']} flights"
    better = np.isfinite(c["auc_delta_ci_low"]) and c["auc_delta_ci_low"] > max(min_delta, 0.0)
    calibrated = c["log_loss_delta_ci_low"] <= log_loss_tolerance  # not shown worse by more than the tolerance
    text = (f"shadow v{shadow} vs champion v{champion} on {span}: AUC delta {c['auc_delta']:+.4f} "
            f"[{c['auc_delta_ci_low']:+.4f}, {c['auc_delta_ci_high']:+.4f}], log loss {c['shadow_log_loss']:.4f} "
            f"vs {c['champion_log_loss']:.4f}")
    if better and calibrated:
        return ShadowDecision(True, "PROMOTE " + text, shadow, champion, tuple(window), c)
    why = "not significantly better" if not better else "log loss worse"
    return ShadowDecision(False, f"KEEP ({why}) " + text, shadow, champion, tuple(window), c)


def load_days(lake, *, shadow: str, champion: str, last: int) -> dict[str, pd.DataFrame]:
    """``joined`` rows of the latest ``last`` days on which ``shadow`` scored beside ``champion``
    and the outcomes have landed (``lake``: a ``lib.storage.Lake``)."""
    out: dict[str, pd.DataFrame] = {}
    for day in sorted(lake.partitions("shadow_predictions"), reverse=True):
        if len(out) >= last:
            break
        if not (lake.has("training_examples", day) and lake.has("flight_delay_predictions", day)):
            continue
        sh = lake.read("shadow_predictions", day)
        if not len(sh) or str(sh["model_version"].iloc[0]) != str(shadow) \
                or str(sh["champion_version"].iloc[0]) != str(champion):
            continue
        pred = lake.read("flight_delay_predictions", day, columns=["flight_id", "delay_probability", "model_version"])
        if set(pred["model_version"].astype(str)) != {str(champion)}:
            continue
        out[day] = joined(pred, sh, lake.read("training_examples", day, columns=["flight_id", "label"]))
    return out
