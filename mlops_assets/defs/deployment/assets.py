"""Deployment: promotion (alias ``champion``), the serving spec, and daily batch predictions."""


from datetime import datetime, timezone

import dagster as dg

from mlops_assets.defs import observed
from mlops_assets.defs.common import OWNERS, record_inputs, usage_metadata
from mlops_assets.lib.usage import measure
from mlops_assets.defs.k8s import cpu_step_tags
from mlops_assets.defs.partitions import daily_partitions, single_run, weekly_partitions, window_days
from mlops_assets.defs.resources import KubernetesServing, LakeStorage, MlflowTracking
from mlops_assets.settings import get_settings


@dg.asset(
    group_name="deployment",
    partitions_def=weekly_partitions,
    kinds={"mlflow"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),  # runs with training_job: see defs/training/assets.py
    output_required=False,
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
)
def champion(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage, challenger: dict):
    """The week's promotion: moves the registry alias ``champion`` to the challenger's version.
    It re-applies the gate itself, so it never promotes a blocked challenger, whichever path
    started it. A blocked gate is a decision, not an error: the step succeeds without
    materialising (so ``model_deployment`` after it does not run) and ``champion`` stays where it
    was. Its partitions are the promotion history."""
    from mlops_assets.lib import registry
    from mlops_assets.lib.metrics import gate_from

    mlflow.experiment_id()
    decision = gate_from(challenger)
    if not decision.promote:
        context.log.info(f"champion {context.partition_key}: not promoting v{challenger['version']}: "
                         f"{decision.describe()}")
        return
    infra = challenger.get("infra") or {"passed": True, "reason": "validated before infra validation existed"}
    if not infra["passed"]:
        context.log.info(f"champion {context.partition_key}: not promoting v{challenger['version']}: "
                         f"infra validation: {infra['reason']}")
        return
    # Under the champion lock: if champion moved since the gate looked (another week's promotion,
    # a shadow promotion, a rollback), the challenger is gated again against the champion now.
    promoted = registry.promote(challenger["version"], expected_current=challenger.get("champion_version"),
                                tags={"promoted_by_dagster_run": context.run_id},
                                regate=_regate(lake, context.partition_key, challenger["version"]))
    if promoted is None:
        context.log.info(f"champion {context.partition_key}: not promoting v{challenger['version']}: champion moved "
                         "since its gate, and gated again against it, it did not pass")
        return
    prev_version, now = promoted
    context.log.info(f"champion: v{prev_version} -> v{challenger['version']} ({decision.describe()})")
    yield dg.Output(
        {"version": challenger["version"], "previous": prev_version, "promoted_at": now,
         "week": context.partition_key},
        metadata={
            "model_version": challenger["version"],
            "previous_version": prev_version,
            "holdout_roc_auc": dg.MetadataValue.float(decision.challenger_auc),
            "decision": decision.describe(),
            "data_window": challenger["data_window"],
        })


def _regate(lake: LakeStorage, week: str, version: str):
    """The gate again, for ``version`` against whatever is champion when its promotion finds the
    alias moved: the same holdout rows (the week's training set), the same decision rule."""
    def regate(current: str | None) -> tuple[bool, str]:
        from mlops_assets.lib import registry
        from mlops_assets.lib.features import feature_matrix
        from mlops_assets.lib.metrics import GateDecision

        s = get_settings()
        ts = lake.lake().read("training_set", week)
        holdout = ts[ts["split"] == "holdout"]
        X = feature_matrix(holdout)
        p = registry.load_version(version).predict(X)["delay_probability"].to_numpy()
        p_cur = registry.load_version(current).predict(X)["delay_probability"].to_numpy() if current else None
        d = GateDecision.compare(holdout["label"].to_numpy(), p, p_cur, min_auc=s.gate_min_auc,
                                 min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance)
        return d.promote, f"v{version} against v{current}: {d.describe()}"

    return regate


@dg.asset(
    group_name="deployment",
    kinds={"mlflow"},
    owners=OWNERS,
    op_tags=cpu_step_tags("small"),
    output_required=False,
)
def shadow_promotion(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage):
    """Promotion earned live: moves ``champion`` to the shadow challenger when, pooled over its
    latest ``MLOPS_SHADOW_PROMOTE_DAYS`` labelled days beside the champion, it was significantly
    better on the same flights (lower bound of the paired AUC difference above
    ``MLOPS_GATE_MIN_DELTA`` and above 0, log loss within ``MLOPS_GATE_LOG_LOSS_TOL``) and it passes
    infra validation.  Otherwise nothing moves and nothing materialises."""
    from mlops_assets.lib import registry
    from mlops_assets.lib import shadow as shadow_lib
    from mlops_assets.lib.features import FEATURE_COLUMNS
    from mlops_assets.lib.infra_validation import validate_version

    s = get_settings()
    mlflow.experiment_id()
    champ = registry.alias_version(registry.CHAMPION)
    cand = registry.alias_version(registry.CHALLENGER)
    if s.shadow_promote_days < 1 or champ is None or cand is None or str(cand.version) == str(champ.version):
        context.log.info("shadow_promotion: nothing to decide (MLOPS_SHADOW_PROMOTE_DAYS="
                         f"{s.shadow_promote_days}, champion {champ and champ.version}, challenger {cand and cand.version})")
        return
    lk = lake.lake()
    champion, version = str(champ.version), str(cand.version)
    by_day = shadow_lib.load_days(lk, shadow=version, champion=champion, last=s.shadow_promote_days)
    decision = shadow_lib.decide(by_day, shadow=version, champion=champion, days=s.shadow_promote_days,
                                 min_delta=s.gate_min_delta, log_loss_tolerance=s.gate_log_loss_tolerance)
    context.log.info(f"shadow_promotion: {decision.reason}")
    if not decision.promote:
        return
    if s.infra_validation:
        infra = validate_version(version, lk.read("flight_features", decision.days[-1])[FEATURE_COLUMNS],
                                 tracking_uri=s.tracking_uri, p99_budget_ms=s.infra_p99_ms)
        if not infra.passed:
            registry.set_version_tags(version, {"infra_validation": infra.reason[:5000]})
            context.log.info(f"shadow_promotion: v{version} failed infra validation: {infra.reason}")
            return
    try:
        prev, now = registry.promote(version, expected_current=champion,
                                     tags={"promoted_by_dagster_run": context.run_id, "promoted_by": "shadow",
                                           "shadow_decision": decision.reason[:5000]})
    except registry.PromotionConflict as exc:
        raise dg.Failure(description=f"shadow_promotion: {exc}") from None
    c = decision.comparison
    yield dg.Output({"version": version, "previous": prev, "promoted_at": now, "days": list(decision.days)}, metadata={
        "model_version": version, "previous_version": prev, "decision": decision.reason,
        "days": ",".join(decision.days), "flights": c["flights"],
        **{k: dg.MetadataValue.float(float(c[k])) for k in ("auc_delta", "auc_delta_ci_low", "auc_delta_ci_high")},
    })


@dg.asset(
    group_name="deployment",
    deps=["champion", "shadow_promotion"],
    kinds={"kubernetes", "mlflow"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),  # runs with training_job: see defs/training/assets.py
)
def model_deployment(context: dg.AssetExecutionContext, mlflow: MlflowTracking, kubernetes: KubernetesServing) -> dict:
    """The live serving spec: a Kubernetes Deployment + Service serving the champion's exact version
    with ``mlops-serve``, and a smoke test that loads that version from the registry and
    scores its logged input example.  On Kubernetes (k8s profile) it also applies them and waits for
    the rollout; a failed rollout is undone, so the previous version keeps serving."""
    import numpy as np

    from mlops_assets.lib import registry
    from mlops_assets.lib.manifests import serving_manifests, to_yaml
    from mlops_assets.lib.storage import Location

    mlflow.experiment_id()
    champ = registry.alias_version(registry.CHAMPION)
    if champ is None:
        raise dg.Failure(description="model_deployment: the registry has no 'champion' alias yet; "
                                     "materialise a training week whose gate passes first")
    version = str(champ.version)
    try:
        p = registry.smoke_test(version)
    except registry.SmokeTestFailed as exc:
        raise dg.Failure(description=f"model_deployment: {exc}") from exc
    s = get_settings()
    docs = serving_manifests(version, image=s.k8s_image, namespace=s.k8s_namespace, max_rows=s.serving_max_rows,
                             max_bytes=s.serving_max_bytes, payload_sample=s.payload_sample,
                             env_secrets=s.k8s_env_secrets)
    text = to_yaml(docs)
    applied = None
    if kubernetes.apply:
        from mlops_assets.lib.k8s_apply import RolloutFailed, apply_serving

        apps, core = kubernetes.clients()
        try:
            applied = apply_serving(apps, core, docs, timeout_s=kubernetes.rollout_timeout_s)
        except RolloutFailed as exc:
            raise dg.Failure(description=f"model_deployment: {exc}", metadata={"model_version": version}) from exc
        context.log.info(f"rolled out v{version}: {applied.action}, revision {applied.revision}, {applied.seconds:.0f}s")
    loc = Location(s.deploy_dir)
    loc.write_bytes("serving.yaml", text.encode())
    context.log.info(f"serving spec for v{version} -> {loc.describe('serving.yaml')}; smoke test scored {len(p)} rows")
    # What the sensors need to know about the model now serving, in one record of the instance
    # (no registry call per tick): the landing sensor scores days after its data window, the
    # model-health sensor judges it against its holdout metrics.
    context.add_output_metadata({
        "model_version": version,
        "week": champ.tags.get("week", ""),
        "data_window": champ.tags.get("data_window", ""),
        "holdout_roc_auc": dg.MetadataValue.float(float(champ.tags.get("holdout_roc_auc", "nan"))),
        "holdout_log_loss": dg.MetadataValue.float(float(champ.tags.get("holdout_log_loss", "nan"))),
        "model_uri": registry.version_uri(version),
        "manifest_path": dg.MetadataValue.path(loc.describe("serving.yaml")),
        "manifest": dg.MetadataValue.md(f"```yaml\n{text}\n```"),
        "smoke_test_rows": len(p),
        "smoke_test_mean_probability": dg.MetadataValue.float(float(np.mean(p))),
        "profile": s.profile,
        **({"rollout": applied.action, "deployment_revision": applied.revision,
            "rollout_seconds": dg.MetadataValue.float(applied.seconds)} if applied else {"rollout": "rendered only"}),
    })
    return {"version": version, "model_uri": registry.version_uri(version), "manifest": loc.describe("serving.yaml"),
            "data_window": champ.tags.get("data_window", "")}


@dg.asset(
    group_name="deployment",
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=["flight_features", "model_deployment"],
    kinds={"mlflow", "parquet"},
    owners=OWNERS,
    op_tags=cpu_step_tags("data"),
)
def flight_delay_predictions(context: dg.AssetExecutionContext, mlflow: MlflowTracking, lake: LakeStorage):
    """The deployed model (the version ``model_deployment`` last recorded, not the mutable alias)
    scores the day's ``flight_features`` before outcomes exist; each row records the model version
    that scored it and the deployment (``deployment_run_id``), and the day's performance as estimated from the probabilities
    alone (CBPE, corrected by the model's holdout: ``estimated_roc_auc``, ``estimated_log_loss``),
    which ``prediction_performance`` sets beside the realised values once outcomes land.  The
    shadow challenger (``lib.shadow``: the ``challenger`` version, when it passed the floor, is
    not champion and was not trained on the day) scores the same rows into ``shadow_predictions``,
    which nothing serves."""
    from mlops_assets.lib import registry

    mlflow.experiment_id()
    deployed = observed.serving(context.instance)
    if deployed is None:
        raise dg.Failure(description="flight_delay_predictions: no model is deployed yet (no model_deployment "
                                     "materialisation): materialise a training week whose gate passes, or deployment_job")
    version = deployed.version
    days = window_days(context)
    data_end = deployed.data_end
    seen = [d for d in days if data_end and d <= data_end]
    if seen:
        raise dg.Failure(description=(
            f"flight_delay_predictions: the deployed v{version} was trained on data up to {data_end} "
            f"({deployed.data_window}); scoring {seen[0]}..{seen[-1]} with it would measure it on "
            "its own training days. Live predictions are made by a model that has not seen the day."))
    model = registry.load_version(version)
    bias = registry.load_reference(version).get("estimate_bias")
    shadow = _shadow_model(registry, version, days[0])
    lk = lake.lake()
    scored_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    means: list[float] = []
    inputs: dict[str, dict[str, str]] = {}
    with measure() as usage:
        total, estimate = _score_days(days, lk, model, version, scored_at, means, inputs, bias, shadow,
                                      deployment=deployed.run_id)
    record_inputs(context, inputs)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": total,
        "model_version": version,
        "deployment_run_id": deployed.run_id,
        "mean_delay_probability": dg.MetadataValue.float(sum(means) / max(1, len(means))),
        "estimated_roc_auc": dg.MetadataValue.float(estimate["estimated_roc_auc"]),
        "estimated_log_loss": dg.MetadataValue.float(estimate["estimated_log_loss"]),
        "shadow_version": shadow[0] if shadow else "none",
        **usage_metadata(usage),
    })


def _shadow_model(registry, champion: str, first_day: str):
    """(version, loaded model) of the shadow challenger for days from ``first_day``, or None."""
    from mlops_assets.lib.shadow import eligible

    if not get_settings().shadow:
        return None
    cand = registry.alias_version(registry.CHALLENGER)
    if cand is None or not eligible(cand.tags, champion=champion, version=str(cand.version), first_day=first_day):
        return None
    return str(cand.version), registry.load_version(str(cand.version))


def _score_days(days, lk, model, version, scored_at, means, inputs, bias=None, shadow=None,
                deployment: str = "") -> tuple[int, dict]:
    from mlops_assets.lib.metrics import estimated_performance
    from mlops_assets.lib.storage import digest

    code = get_settings().code_version
    total = 0
    for day in days:
        feats, sha = lk.read_fp("flight_features", day)
        inputs[day] = {"input_fingerprint": digest(sha, f"model:{version}", f"shadow:{shadow[0] if shadow else ''}", code)}
        p = model.predict(feats)["delay_probability"].to_numpy()
        out = feats[["flight_id", "date", "carrier", "flight", "origin", "dest", "sched_dep_time"]].copy()
        out["delay_probability"] = p
        out["model_version"] = version
        out["deployment_run_id"] = deployment  # the model_deployment run that made `version` the served one
        out["scored_at"] = scored_at
        estimate = estimated_performance(p, bias)  # the day's, known before its outcomes
        for k, v in estimate.items():
            out[k] = v
        lk.write("flight_delay_predictions", day, out)
        if shadow is not None:  # beside the champion, on the same rows; never served
            sh = out[["flight_id", "date"]].copy()
            sh["delay_probability"] = shadow[1].predict(feats)["delay_probability"].to_numpy()
            sh["model_version"] = shadow[0]
            sh["champion_version"] = version
            sh["role"] = "shadow"
            sh["scored_at"] = scored_at
            lk.write("shadow_predictions", day, sh)
        elif lk.has("shadow_predictions", day):  # a re-score without a shadow leaves no stale one
            lk.delete(lk.key("shadow_predictions", day))
        means.append(float(p.mean()))
        total += len(out)
    return total, estimate
