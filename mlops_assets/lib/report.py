"""The platform-health picture: one PNG with live AUC and drift over time (no Dagster here)."""

from __future__ import annotations

import io

from mlops_assets.settings import PSI_MAJOR


def health_chart(perf_rows: list[dict], drift_rows: list[dict], holdout_auc: dict[str, float],
                 psi_threshold: float = PSI_MAJOR) -> bytes:
    """PNG bytes: live ROC AUC per day (one line per model version, its holdout AUC dashed) and
    per day the largest ratio of a feature's PSI to its alarm threshold (calibrated on the model's
    training window; ``psi_threshold`` for rows without one): above 1 is an alarm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    versions = sorted({str(r["model_version"]) for r in perf_rows}, key=lambda v: int(v) if v.isdigit() else 0)
    for v in versions:
        rows = sorted((r for r in perf_rows if str(r["model_version"]) == v), key=lambda r: r["date"])
        line, = ax1.plot([r["date"] for r in rows], [r["roc_auc"] for r in rows], marker="o", label=f"live AUC v{v}")
        if v in holdout_auc:
            ax1.axhline(holdout_auc[v], linestyle="--", color=line.get_color(), alpha=0.6, label=f"holdout AUC v{v}")
    ax1.set_ylabel("ROC AUC")
    ax1.set_title("Live performance of the champion")
    if perf_rows:
        ax1.legend(loc="lower left", fontsize=8)
    days = sorted({r["date"] for r in drift_rows})
    worst = [max(r["psi"] / (r.get("threshold") or psi_threshold) for r in drift_rows if r["date"] == d) for d in days]
    ax2.bar(days, worst, color=["#c0392b" if w > 1 else "#2e86c1" for w in worst])
    ax2.axhline(1.0, color="black", linestyle=":", label="alarm threshold (calibrated per feature)")
    ax2.set_ylabel("largest PSI / threshold")
    ax2.set_title("Feature drift against the champion's training data")
    if days:
        ax2.legend(loc="upper left", fontsize=8)
    for label in ax2.get_xticklabels():
        label.set_rotation(45)
        label.set_horizontalalignment("right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
