"""Everything we would send to a cluster, built by the real libraries and validated offline
against the Kubernetes 1.33 schemas (kubernetes-validate, strict).  No cluster runs here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
GPU = "nvidia.com/gpu"


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True)


def assert_restricted(pod_spec: dict, where: str) -> None:
    """The Restricted Pod Security Standard, on the pod and every container."""
    psc = pod_spec.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True, where
    assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
    for c in pod_spec["containers"] + (pod_spec.get("initContainers") or []):
        sc = c.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, (where, c["name"])
        assert (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
        assert not sc.get("privileged"), (where, c["name"])


def k8s_profile_job_manifests(job_name: str) -> dict[str, dict]:
    """Every step of ``job_name`` under MLOPS_PROFILE=k8s, as the k8s_job_executor would build it,
    rendered by ``python -m mlops_assets.defs.k8s`` (the profile is read when the location loads)."""
    env = {**os.environ, "MLOPS_PROFILE": "k8s", "MLOPS_IMAGE": "ghcr.io/example/mlops-assets:test-cpu",
           "MLOPS_GPU_IMAGE": "ghcr.io/example/mlops-assets:test-cuda", "MLOPS_GPU_COUNT": "2",
           "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc", "MLOPS_LAKE_URI": "memory://lake",
           "MLOPS_LANDING_URI": "memory://landing"}
    out = subprocess.run([sys.executable, "-m", "mlops_assets.defs.k8s", job_name], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def training_steps():
    return k8s_profile_job_manifests("training_job")


def test_every_training_step_job_is_valid_and_only_torch_trials_get_gpus(training_steps):
    assert set(training_steps) >= {"training_set", "train_torch_mlp_trial", "train_hist_gradient_boosting_trial",
                                   "challenger", "champion", "plan_torch_mlp_trials", "pick_best_torch_mlp"}
    for op, info in training_steps.items():
        job = info["job"]
        validate(job)
        pod = job["spec"]["template"]["spec"]
        assert_restricted(pod, op)
        (container,) = pod["containers"]
        res = container["resources"]
        gpu = GPU in res.get("limits", {})
        assert gpu == (op == "train_torch_mlp_trial"), op
        assert res["requests"]["cpu"] and res["limits"]["memory"], op
        tolerations = pod.get("tolerations") or []
        if gpu:
            assert res["limits"][GPU] == "2" and res["requests"][GPU] == "2"
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in tolerations
            assert container["image"].endswith(":test-cuda") and info["pool"] == "gpu"
        else:
            assert not any(t.get("key") == GPU for t in tolerations), op
            assert container["image"].endswith(":test-cpu") and info["pool"] is None
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("MLOPS_PROFILE") == "k8s", op
        assert {"secretRef": {"name": "mlops-credentials"}} in container.get("envFrom", []), op
        assert pod.get("serviceAccountName") == "mlops-assets"


@pytest.mark.parametrize("job_name", ["daily_data_job", "scoring_job", "deployment_job", "performance_job"])
def test_other_jobs_steps_are_valid_cpu_pods(job_name):
    for op, info in k8s_profile_job_manifests(job_name).items():
        validate(info["job"])
        pod = info["job"]["spec"]["template"]["spec"]
        assert_restricted(pod, op)
        assert GPU not in pod["containers"][0]["resources"].get("limits", {}), op


def _yaml_docs(path: Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", ["deploy/mlflow/mlflow.yaml", "deploy/k8s-rbac.yaml"])
def test_deploy_manifests_are_valid_and_restricted(path):
    docs = _yaml_docs(ROOT / path)
    assert docs
    for doc in docs:
        validate(doc)
        if doc["kind"] == "Deployment":
            assert_restricted(doc["spec"]["template"]["spec"], path)


def test_rendered_serving_manifests_are_valid_restricted_and_pin_the_version():
    from mlops_assets.lib.manifests import serving_manifests, to_yaml

    docs = serving_manifests("7", image="ghcr.io/example/mlops-assets:1", namespace="mlops")
    for doc in yaml.safe_load_all(to_yaml(docs)):
        validate(doc)
    dep = docs[0]
    assert_restricted(dep["spec"]["template"]["spec"], "serving")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["mlops-serve", "--model-uri", "models:/flight_delay/7"]
    # Prometheus finds /metrics on the pods; the server enforces both limits itself
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert ann["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLOPS_SERVING_MAX_BYTES"] == "8000000" and env["MLOPS_SERVING_MAX_ROWS"] == "10000"
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-credentials"}}]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    with pytest.raises(ValueError):
        serving_manifests("latest", image="x")


def test_helm_values_configure_what_the_platform_needs():
    v = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    dep = v["dagster-user-deployments"]["deployments"][0]
    assert dep["dagsterApiGrpcArgs"] == ["-m", "mlops_assets.definitions"]
    assert {"name": "MLOPS_PROFILE", "value": "k8s"} in dep["env"]
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert v["postgresql"]["enabled"] is True
    assert v["concurrency"]["pools"]["granularity"] == "op"
    run_pod = v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert run_pod["podSpecConfig"]["securityContext"]["runAsNonRoot"] is True
    assert run_pod["containerConfig"]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert v["computeLogManager"]["type"] == "S3ComputeLogManager"


def test_dagster_cloud_yaml_parses_with_the_dagster_cloud_cli_and_its_k8s_context_with_dagster_k8s():
    from dagster_cloud_cli.config.models import load_dagster_cloud_yaml
    from dagster_k8s.container_context import K8sContainerContext

    text = (ROOT / "dagster_cloud.yaml").read_text()
    parsed = load_dagster_cloud_yaml(text)
    (loc,) = parsed.locations
    assert loc.location_name == "mlops_assets" and loc.code_source.module_name == "mlops_assets.definitions"
    assert set(loc.container_context) == {"k8s"}
    ctx = K8sContainerContext.create_from_config(loc.container_context)  # raises on unknown keys
    assert ctx.namespace == "mlops" and ctx.run_k8s_config.container_config["env_from"] == [{"secret_ref": {"name": "mlops-credentials"}}]
    assert ctx.run_k8s_config.pod_spec_config["security_context"]["run_as_non_root"] is True


def test_dockerfile_layers_dependencies_first_and_runs_as_non_root():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert text.index("COPY pyproject.toml") < text.index("COPY mlops_assets")
    assert "ARG TORCH=cpu" in text and "USER 10001" in text
    assert ".venv" in (ROOT / ".dockerignore").read_text()


def test_the_step_jobs_render_for_review(tmp_path):
    """`python -m mlops_assets.defs.k8s JOB --out DIR` writes one valid Job per step; it refuses the
    local profile, which runs no pods."""
    env = {**os.environ, "MLOPS_PROFILE": "k8s", "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc",
           "MLOPS_LAKE_URI": "memory://lake", "MLOPS_LANDING_URI": "memory://landing"}
    out = subprocess.run([sys.executable, "-m", "mlops_assets.defs.k8s", "scoring_job", "--out", str(tmp_path)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    files = sorted(tmp_path.glob("*.yaml"))
    assert {f.stem for f in files} == {"flight_delay_predictions", "feature_drift"}
    for f in files:
        validate(yaml.safe_load(f.read_text()))
    local = {k: v for k, v in env.items() if k != "MLOPS_PROFILE"}
    out = subprocess.run([sys.executable, "-m", "mlops_assets.defs.k8s", "scoring_job"], env=local, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "MLOPS_PROFILE=k8s" in out.stderr
