"""Per-step Kubernetes settings, as ``dagster-k8s/config`` op tags.

Job-level ``dagster-k8s/config`` tags do not reach ``k8s_job_executor`` step pods, so every op
carries its own.  They are plain tags on the op definitions: every launch path (UI, CLI, sensor,
schedule, automation, backfill) builds its steps from the same definitions and gets the same pods.
Pods follow the Restricted Pod Security Standard.
"""


import json
from pathlib import Path
from types import SimpleNamespace

from mlops_assets.settings import get_settings

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"

RESTRICTED_CONTAINER_SECURITY = {
    "allow_privilege_escalation": False,
    "run_as_non_root": True,
    "capabilities": {"drop": ["ALL"]},
    "seccomp_profile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD_SECURITY = {
    "run_as_non_root": True,
    "run_as_user": 10001,
    "run_as_group": 10001,
    "fs_group": 10001,
    "seccomp_profile": {"type": "RuntimeDefault"},
}

# What each kind of step needs (requests == limits for memory: no overcommit, no OOM-kill from a
# neighbour; CPU limit allows a burst). Which size each step gets follows its peak measured at its
# largest realistic input (bench/step_memory.py; tests/k8s/test_step_sizes.py keeps a 25% margin).
SIZES = {
    "small": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "data": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    "train": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}},
}


def _config(resources: dict, pod_extra: dict | None = None) -> dict:
    return {
        "container_config": {"resources": resources, "security_context": RESTRICTED_CONTAINER_SECURITY},
        "pod_spec_config": {"security_context": RESTRICTED_POD_SECURITY, **(pod_extra or {})},
    }


def cpu_step_tags(size: str = "data") -> dict:
    return {K8S_CONFIG_TAG: _config(SIZES[size])}


def gpu_step_tags() -> dict:
    s = get_settings()
    count = str(s.gpu_count)
    resources = {
        "requests": {**SIZES["train"]["requests"], GPU_RESOURCE: count},
        "limits": {**SIZES["train"]["limits"], GPU_RESOURCE: count},
    }
    pod: dict = {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}
    selector = s.gpu_node_selector  # e.g. "nvidia.com/gpu.present=true"
    if selector:
        pod["node_selector"] = dict(kv.split("=", 1) for kv in selector.split(",") if "=" in kv)
    cfg = _config(resources, pod)
    if s.gpu_image:  # a CUDA build of the same code (deploy/Dockerfile --build-arg TORCH=cuda)
        cfg["container_config"]["image"] = s.gpu_image
    return {K8S_CONFIG_TAG: cfg}


def k8s_executor_config(settings=None) -> dict:
    """``k8s_job_executor`` config for the k8s profile: namespace, image, service account, env
    secrets; every step pod gets the Restricted securityContext and small defaults, which each
    op's own ``dagster-k8s/config`` tag then overrides."""
    s = settings or get_settings()
    cfg = {
        "job_namespace": s.k8s_namespace,
        "service_account_name": s.k8s_service_account,
        "env_secrets": list(s.k8s_env_secrets),
        "env_vars": ["MLOPS_PROFILE=k8s", f"MLOPS_K8S_NAMESPACE={s.k8s_namespace}", f"MLOPS_GPU_COUNT={s.gpu_count}",
                     f"MLOPS_START={s.start}", f"MLOPS_END={s.end}", f"MLOPS_TRAIN_WEEKS={s.train_weeks}",
                     f"MLOPS_TRIALS={s.trials}", f"MLOPS_IMAGE={s.k8s_image}"]
        + ([f"MLOPS_GPU_IMAGE={s.gpu_image}"] if s.gpu_image else []),
        "image_pull_policy": "IfNotPresent",
        "step_k8s_config": _config(SIZES["small"]),
    }
    if s.k8s_image != "mlops-assets:latest":  # with user code deployments the image comes from the location
        cfg["job_image"] = s.k8s_image
    return cfg


def render_step_job(op_tags, step_key: str, *, run_id: str, job_name: str = "training_job") -> dict:
    """The Kubernetes Job that ``k8s_job_executor`` would create for one step, built with
    dagster-k8s's own code the way its ``launch_step`` merges settings (executor config, then the
    op's ``dagster-k8s/config`` tag).  For validation and review; nothing is sent anywhere."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )
    from kubernetes.client import ApiClient

    cfg = k8s_executor_config()
    ctx = K8sContainerContext(
        namespace=cfg["job_namespace"], service_account_name=cfg["service_account_name"],
        env_secrets=cfg["env_secrets"], env_vars=cfg["env_vars"], image_pull_policy=cfg["image_pull_policy"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(cfg["step_k8s_config"]),
    )
    tags = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in dict(op_tags).items()}
    ctx = ctx.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    # What the Helm chart's K8sRunLauncher contributes to every step Job (values.yaml defaults).
    chart_launcher = SimpleNamespace(job_image=None, dagster_home="/opt/dagster/dagster_home",
                                     instance_config_map="dagster-instance",
                                     postgres_password_secret="dagster-postgresql-secret")  # pragma: allowlist secret
    job_config = ctx.get_k8s_job_config(cfg.get("job_image") or get_settings().k8s_image, chart_launcher)
    name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config, args=["dagster", "api", "execute_step"], job_name=name, pod_name=name,
        component="step_worker", user_defined_k8s_config=ctx.run_k8s_config,
        labels={"dagster/job": job_name, "dagster/op": step_key[:63], "dagster/run-id": run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": job_name}, {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
    )
    return ApiClient().sanitize_for_serialization(job)


def render_job_steps(job_name: str) -> dict[str, dict]:
    """Every step of ``job_name`` as the Kubernetes Job ``k8s_job_executor`` would create for it."""
    from mlops_assets.definitions import defs

    job = defs.resolve_job_def(job_name)
    if job.executor_def.name != "k8s":  # k8s_job_executor's name: only then is each step a pod
        raise RuntimeError(f"{job_name} runs on the {job.executor_def.name!r} executor, not k8s_job_executor")
    return {node.name: {"pool": node.pool, "job": render_step_job(node.tags, node.name, run_id="0123456789abcdef",
                                                                   job_name=job_name)}
            for node in job.graph.iterate_op_defs()}


def main(argv=None) -> int:
    """Write what a job's step pods would be, for review or ``kubectl apply --dry-run=server``:

        MLOPS_PROFILE=k8s MLOPS_IMAGE=... python -m mlops_assets.defs.k8s training_job --out steps/
    """
    import argparse

    import yaml

    ap = argparse.ArgumentParser(prog="python -m mlops_assets.defs.k8s", description=main.__doc__.splitlines()[0])
    ap.add_argument("job", help="a job of the code location, e.g. training_job")
    ap.add_argument("--out", type=Path, help="a folder for one YAML per step (default: JSON on stdout)")
    args = ap.parse_args(argv)
    if get_settings().profile != "k8s":
        ap.error("set MLOPS_PROFILE=k8s: the local profile runs no pods")
    steps = render_job_steps(args.job)
    if args.out is None:
        print(json.dumps(steps))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for op, step in steps.items():
        (args.out / f"{op}.yaml").write_text(yaml.safe_dump(step["job"], sort_keys=False))
    print(f"{len(steps)} step Jobs of {args.job} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
