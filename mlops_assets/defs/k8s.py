"""Per-step Kubernetes settings, as ``dagster-k8s/config`` op tags.

Job-level ``dagster-k8s/config`` tags do not reach ``k8s_job_executor`` step pods, so every op
carries its own.  They are plain tags on the op definitions: every launch path (UI, CLI, sensor,
schedule, automation, backfill) builds its steps from the same definitions and gets the same pods.
Pods follow the Restricted Pod Security Standard.
"""


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

# What each kind of step needs (requests == limits for memory; CPU limit allows a burst).
SIZES = {
    "small": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
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
    import os

    selector = os.environ.get("MLOPS_GPU_NODE_SELECTOR", "")  # e.g. "nvidia.com/gpu.present=true"
    if selector:
        pod["node_selector"] = dict(kv.split("=", 1) for kv in selector.split(",") if "=" in kv)
    return {K8S_CONFIG_TAG: _config(resources, pod)}
