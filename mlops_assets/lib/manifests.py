"""Kubernetes manifests for serving the champion (no Dagster here).

One template, ``deploy/serving.yaml.tmpl`` style but built as data: a Deployment running
``mlops-serve`` (MLflow's scoring app with our byte limit, metrics and payload log) for one exact
registered version, and a Service in front of it. Pods follow the Restricted Pod Security Standard
and carry the usual Prometheus scrape annotations for ``/metrics``.
"""

from __future__ import annotations

import re

from mlops_assets.settings import MODEL_NAME

SERVING_PORT = 8080
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def serving_manifests(version: str | int, *, image: str, namespace: str = "mlops",
                      name: str = "flight-delay-serving", replicas: int = 2,
                      tracking_uri_secret: str = "mlflow-tracking", max_rows: int = 10_000,
                      max_bytes: int = 8_000_000, payload_sample: float = 1.0,
                      env_secrets: tuple[str, ...] = ("mlops-credentials",)) -> list[dict]:
    """The Deployment and Service. ``env_secrets``: secrets whose keys become the container's
    environment (the object store's credentials and ``MLOPS_LANDING_URI`` / ``MLOPS_PAYLOAD_LOG_URI``
    for the payload log), as for the step pods."""
    version = str(version)
    if not version.isdigit():
        raise ValueError(f"model version must be a number, got {version!r}")
    if not _NAME.match(name) or not _NAME.match(namespace):
        raise ValueError(f"invalid Kubernetes name {name!r} / namespace {namespace!r}")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mlops-assets"}
    model_uri = f"models:/{MODEL_NAME}/{version}"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**labels, "mlops/model-version": version},
                     "annotations": {"mlops/model-uri": model_uri}},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {**labels, "mlops/model-version": version},
                             "annotations": {"mlops/model-uri": model_uri,
                                             "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                             "prometheus.io/port": str(SERVING_PORT)}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "model",
                        "image": image,
                        "command": ["mlops-serve", "--model-uri", model_uri, "--host", "0.0.0.0",
                                    "--port", str(SERVING_PORT)],
                        "envFrom": [{"secretRef": {"name": n}} for n in env_secrets],
                        "env": [
                            {"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": {
                                "name": tracking_uri_secret, "key": "MLFLOW_TRACKING_URI"}}},
                            {"name": "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "value": "10"},
                            # enforced by the server itself: more rows -> HTTP 400, more bytes -> HTTP 413
                            {"name": "MLOPS_SERVING_MAX_ROWS", "value": str(max_rows)},
                            {"name": "MLOPS_SERVING_MAX_BYTES", "value": str(max_bytes)},
                            {"name": "MLOPS_PAYLOAD_SAMPLE", "value": f"{payload_sample:g}"},
                        ],
                        "ports": [{"name": "http", "containerPort": SERVING_PORT}],
                        "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"},
                                           "initialDelaySeconds": 5, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                          "initialDelaySeconds": 30, "periodSeconds": 10},
                        # one event loop: a core for it, a little more for the payload log's writer
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"cpu": "1500m", "memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                            "readOnlyRootFilesystem": False,
                                            "capabilities": {"drop": ["ALL"]},
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    return [deployment, service]


def to_yaml(docs: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
