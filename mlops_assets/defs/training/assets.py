"""Training: the weekly training set, and one hyperparameter sweep per model family.

Each family is a graph-backed asset: ``plan_<family>_trials`` fans out one dynamic step per
trial, ``train_<family>_trial`` trains one (in parallel, each a nested MLflow run, each its own pod
under ``k8s_job_executor``), and ``pick_best_<family>`` keeps the best trial on the validation days.
"""


import dagster as dg

from mlops_assets.defs.common import OWNERS, md_table, tracking_guard, usage_metadata
from mlops_assets.lib.usage import measure
from mlops_assets.defs.k8s import cpu_step_tags, gpu_step_tags
from mlops_assets.defs.partitions import training_window_days, weekly_partitions
from mlops_assets.defs.resources import LakeStorage, MlflowTracking
from mlops_assets.lib.models import FAMILIES
from mlops_assets.settings import get_settings

# Read when the code location loads: the shape of the graph (partitions, the training window's
# mapping, the sweep's size) and the descriptions. Steps call get_settings() when they run.
_loaded = get_settings()


class TrainingSetConfig(dg.Config):
    shuffle_labels: bool = False
    """Drill: shuffle the train/valid labels (never the holdout's) to prove the gate stops a bad model."""
    shuffle_seed: int = 7
    break_features: list[str] = []
    """Drill: feature columns to scramble across the train/valid rows, as a broken feature pipeline would."""


@dg.asset(
    group_name="training",
    partitions_def=weekly_partitions,
    deps=[dg.AssetDep("training_examples", partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=-(_loaded.train_weeks - 1), end_offset=0, allow_nonexistent_upstream_partitions=True))],
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),
    description=f"The window of daily examples the week's models learn from ({_loaded.train_weeks} weeks ending "
                "with the week), split by time: train, valid (the 7 days before the holdout) and an "
                "out-of-time holdout (the week itself, where the gate compares challenger and champion).",
)
def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeStorage) -> dict:
    from mlops_assets.lib.training import make_training_set

    lk = lake.lake()
    week = context.partition_key
    days = training_window_days(week, _loaded.train_weeks)
    holdout_days = days[-7:]
    missing = [d for d in holdout_days if not lk.has("training_examples", d)]
    if missing:
        raise dg.Failure(
            description=f"training_set {week}: training_examples missing for the holdout day(s) {missing}; "
                        "materialise them first (their outcomes land a day later)")
    present = [d for d in days if lk.has("training_examples", d)]
    with measure() as usage:
        examples, shas = lk.read_many_fp("training_examples", present)
        ts = make_training_set(examples, shuffle_labels_seed=config.shuffle_seed if config.shuffle_labels else None,
                               break_features=tuple(config.break_features))
        path = lk.write("training_set", week, ts)
    counts = ts["split"].value_counts().to_dict()
    from mlops_assets.lib.storage import digest

    context.add_output_metadata({
        "input_fingerprint": digest(*(f"{d}:{shas[d]}" for d in present), config.model_dump_json(), get_settings().code_version),
        "dagster/row_count": len(ts),
        "train_rows": int(counts.get("train", 0)),
        "valid_rows": int(counts.get("valid", 0)),
        "holdout_rows": int(counts.get("holdout", 0)),
        "positive_rate": dg.MetadataValue.float(float(ts["label"].mean())),
        "data_window": f"{present[0]}..{present[-1]}",
        "days": len(present),
        "labels_shuffled": config.shuffle_labels,
        "features_broken": ", ".join(config.break_features) or "none",
        "lake_path": dg.MetadataValue.path(path),
        **usage_metadata(usage),
    })
    return {
        "week": week, "path": path, "days": present, "data_window": f"{present[0]}..{present[-1]}",
        "rows": len(ts), "labels_shuffled": config.shuffle_labels,
        "features_broken": ",".join(config.break_features),
        "holdout_window": f"{holdout_days[0]}..{holdout_days[-1]}",
    }


def _sweep_asset(family: str):
    gpu = family == "torch_mlp"

    # Sized with the whole training run of a 52-week set, measured as one process (bench/step_memory.py:
    # 1352 MiB, an upper bound of each step's own peak): "data" (2Gi) is the smallest size 25% above it.
    @dg.op(name=f"plan_{family}_trials", out=dg.DynamicOut(dict), tags=cpu_step_tags("data"))
    def plan(context: dg.OpExecutionContext, training_set: dict):
        from mlops_assets.lib.models import sweep

        for i, params in enumerate(sweep(family, _loaded.trials, seed=0)):
            yield dg.DynamicOutput({"trial": i, "params": params, "training_set": training_set},
                                   mapping_key=f"trial_{i}")

    @dg.op(
        name=f"train_{family}_trial",
        tags=gpu_step_tags() if gpu else cpu_step_tags("train"),
        pool="gpu" if gpu else None,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    @tracking_guard
    def train(context: dg.OpExecutionContext, mlflow: MlflowTracking, lake: LakeStorage, trial: dict) -> dict:
        import os

        from mlops_assets.lib import tracking
        from mlops_assets.lib.training import train_trial

        if gpu:
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, get_settings().max_concurrent)))
        ts_info = trial["training_set"]
        ts = lake.lake().read("training_set", ts_info["week"])
        exp = mlflow.experiment_id()
        parent = mlflow.parent_run(context)
        run_id = tracking.start_trial_run(exp, parent, f"{family}-{ts_info['week']}-t{trial['trial']}", {
            "family": family, "week": ts_info["week"], "dagster_run_id": context.run_id,
            "dagster_step": f"{context.op.name}[{context.get_mapping_key()}]",
        })
        try:
            # MLflow samples CPU, memory (and GPU) of the process while the trial trains.
            with measure() as usage, tracking.system_metrics(run_id):
                result = train_trial(family, trial["params"], ts, seed=trial["trial"])
        except Exception:
            tracking.end_run(run_id, "FAILED")
            raise
        tracking.log_batch(run_id, **result.log_fields(usage.metrics))
        tracking.end_run(run_id)
        context.log.info(f"{family} trial {trial['trial']} {result.params}: valid AUC "
                         f"{result.valid_metrics['roc_auc']:.4f} in {result.fit_seconds:.1f}s (MLflow run {run_id})")
        return {"family": family, "trial": trial["trial"], "params": result.params,
                "valid_metrics": result.valid_metrics, "fit_seconds": result.fit_seconds,
                "extra": result.extra, "mlflow_run_id": run_id, "parent_run_id": parent,
                "model": result.model, "training_set": ts_info,
                "usage": usage.metrics, "usage_device": usage.device}

    @dg.op(name=f"pick_best_{family}", tags=cpu_step_tags("data"))
    def pick_best(context: dg.OpExecutionContext, trials: list) -> dict:
        best = max(trials, key=lambda t: (t["valid_metrics"]["roc_auc"], -t["trial"]))
        rows = [{"trial": t["trial"], **{k: str(v) for k, v in t["params"].items()},
                 "valid_auc": t["valid_metrics"]["roc_auc"], "fit_s": t["fit_seconds"],
                 "best": "yes" if t is best else ""} for t in sorted(trials, key=lambda t: t["trial"])]
        context.add_output_metadata({
            "trials": len(trials),
            "best_trial": best["trial"],
            "best_valid_auc": dg.MetadataValue.float(best["valid_metrics"]["roc_auc"]),
            "best_params": dg.MetadataValue.json(best["params"]),
            "best_mlflow_run_id": best["mlflow_run_id"],
            "trials_table": dg.MetadataValue.md(md_table(rows)),
            "fit_seconds_total": dg.MetadataValue.float(sum(t["fit_seconds"] for t in trials)),
            # what the sweep's trial steps used, together
            "wall_seconds": dg.MetadataValue.float(sum(t["usage"]["wall_seconds"] for t in trials)),
            "cpu_seconds": dg.MetadataValue.float(sum(t["usage"]["cpu_seconds"] for t in trials)),
            "peak_rss_mb": dg.MetadataValue.float(max(t["usage"]["peak_rss_mb"] for t in trials)),
            "device": ", ".join(sorted({t["usage_device"] for t in trials})),
            **({"gpu_peak_memory_mb": dg.MetadataValue.float(max(t["usage"]["gpu_peak_memory_mb"] for t in trials))}
               if all("gpu_peak_memory_mb" in t["usage"] for t in trials) else {}),
        })
        return best

    @dg.graph_asset(
        key=dg.AssetKey(["candidate_models", family]),
        group_name="training",
        partitions_def=weekly_partitions,
        ins={"training_set": dg.AssetIn("training_set")},
        kinds={"pytorch", "mlflow"} if gpu else {"scikitlearn", "mlflow"},
        owners=OWNERS,
        description=f"The best {family} trial of the week's hyperparameter sweep ({_loaded.trials} trials, "
                    "each a parallel step and a nested MLflow run).",
    )
    def candidate(training_set):
        return pick_best(plan(training_set).map(train).collect())

    return candidate


candidate_models = [_sweep_asset(f) for f in FAMILIES]
