"""Apply the serving Deployment + Service with the ``kubernetes`` client and wait for the rollout
(no Dagster here).

* create or patch each object (``create_namespaced_*`` on 404, else ``patch_namespaced_*``);
* wait, with a bound, until the Deployment's new ReplicaSet is fully updated and available;
* on a failed or timed-out rollout, patch the previous pod template back (what ``kubectl rollout
  undo`` does) and raise: with ``maxUnavailable: 0`` the old pods never stopped serving, and the
  undo makes the Deployment converge back to the previous version.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time

log = logging.getLogger(__name__)
REVISION = "deployment.kubernetes.io/revision"


class RolloutFailed(RuntimeError):
    pass


@dataclasses.dataclass
class ApplyResult:
    action: str  # "created" | "patched"
    revision: str
    version: str
    seconds: float


def _status(exc) -> int | None:
    return getattr(exc, "status", None)


def _get(obj, *path, default=None):
    for p in path:
        if obj is None:
            return default
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return default if obj is None else obj


def _read_or_none(fn, name, namespace):
    from kubernetes.client.rest import ApiException

    try:
        return fn(name, namespace)
    except ApiException as exc:
        if _status(exc) == 404:
            return None
        raise


def apply_service(core, service: dict) -> str:
    name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
    if _read_or_none(core.read_namespaced_service, name, ns) is None:
        core.create_namespaced_service(ns, service)
        return "created"
    core.patch_namespaced_service(name, ns, service)
    return "patched"


def rollout_done(dep) -> tuple[bool, str | None]:
    """(done, failure reason) from a Deployment's status, as ``kubectl rollout status`` reads it."""
    gen = _get(dep, "metadata", "generation", default=0)
    st = _get(dep, "status", default={})
    for cond in _get(st, "conditions", default=[]) or []:
        if _get(cond, "type") == "Progressing" and _get(cond, "reason") == "ProgressDeadlineExceeded":
            return False, f"progress deadline exceeded: {_get(cond, 'message', default='')}"
    want = _get(dep, "spec", "replicas", default=1)
    done = (_get(st, "observed_generation", default=0) >= gen
            and _get(st, "updated_replicas", default=0) == want
            and _get(st, "available_replicas", default=0) == want
            and _get(st, "replicas", default=0) == want)
    return done, None


def refuse_foreign_models(deployment: dict) -> None:
    """Every model a serving Deployment would load must come from our own registry (loading a
    model runs its code): the annotation and every container's ``-m`` argument."""
    from mlops_assets.lib.registry import check_model_uri

    uris = [deployment["metadata"].get("annotations", {}).get("mlops/model-uri", "")]
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        args = list(c.get("command", [])) + list(c.get("args", []))
        uris += [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-m", "--model-uri")]
    for uri in uris:
        check_model_uri(uri)


def apply_serving(apps, core, docs: list[dict], *, timeout_s: float = 300, poll_s: float = 2.0) -> ApplyResult:
    """Create or patch the serving objects and wait for the Deployment's rollout."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    version = deployment["metadata"]["labels"]["mlops/model-version"]
    refuse_foreign_models(deployment)
    for svc in (d for d in docs if d["kind"] == "Service"):
        apply_service(core, svc)
    name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    t0 = time.monotonic()
    previous = _read_or_none(apps.read_namespaced_deployment, name, ns)
    if previous is None:
        apps.create_namespaced_deployment(ns, deployment)
        action = "created"
    else:
        apps.patch_namespaced_deployment(name, ns, deployment)
        action = "patched"
    reason = None
    while True:
        dep = apps.read_namespaced_deployment_status(name, ns)
        done, reason = rollout_done(dep)
        if done:
            revision = str(_get(dep, "metadata", "annotations", default={}).get(REVISION, ""))
            log.info("rollout of %s v%s done in %.1fs (revision %s)", name, version, time.monotonic() - t0, revision)
            return ApplyResult(action, revision, version, time.monotonic() - t0)
        if reason or time.monotonic() - t0 > timeout_s:
            reason = reason or f"not available after {timeout_s:.0f}s"
            break
        time.sleep(poll_s)
    if previous is not None:
        undo = {"spec": {"template": copy.deepcopy(_serialize(previous)["spec"]["template"])},
                "metadata": {"labels": _serialize(previous)["metadata"].get("labels", {})}}
        apps.patch_namespaced_deployment(name, ns, undo)
        old = _serialize(previous)["metadata"].get("labels", {}).get("mlops/model-version", "?")
        raise RolloutFailed(f"rollout of {name} to model v{version} failed ({reason}); rolled back to the previous "
                            f"pod template (model v{old}), which kept serving")
    raise RolloutFailed(f"rollout of {name} to model v{version} failed ({reason}); there was no previous version")


def _serialize(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)
