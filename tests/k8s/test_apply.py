"""The Kubernetes apply path of model_deployment, against a recording fake of the kubernetes
client's API objects (no cluster here): create, patch, and a failed rollout that keeps the old
version serving."""

import pytest

from mlops_assets.lib.k8s_apply import RolloutFailed, apply_serving
from mlops_assets.lib.manifests import serving_manifests
from tests.k8s.fake_kube import FakeApps, FakeCore

NS, NAME = "mlops", "flight-delay-serving"


def docs(version):
    return serving_manifests(version, image="ghcr.io/example/mlops-assets:1", namespace=NS)


def served_version(apps):
    return apps.objects[(NS, NAME)]["spec"]["template"]["metadata"]["labels"]["mlops/model-version"]


def test_first_apply_creates_then_a_new_version_patches():
    apps, core = FakeApps(), FakeCore()
    r1 = apply_serving(apps, core, docs(1), timeout_s=5, poll_s=0)
    assert (r1.action, r1.revision, r1.version) == ("created", "1", "1")
    assert ("create", NAME) in apps.calls and ("create", NAME) in core.calls
    r2 = apply_serving(apps, core, docs(2), timeout_s=5, poll_s=0)
    assert (r2.action, r2.revision, r2.version) == ("patched", "2", "2")
    assert ("patch", NAME, "2") in apps.calls and ("patch", NAME) in core.calls
    assert served_version(apps) == "2"


@pytest.mark.parametrize("failure, message", [("deadline", "progress deadline exceeded"), ("stuck", "not available")])
def test_failed_rollout_rolls_back_and_the_old_version_keeps_serving(failure, message):
    apps, core = FakeApps(), FakeCore()
    apply_serving(apps, core, docs(1), timeout_s=5, poll_s=0)
    apps.rollout = failure
    with pytest.raises(RolloutFailed, match=message) as err:
        apply_serving(apps, core, docs(2), timeout_s=0.2, poll_s=0.05)
    assert "rolled back" in str(err.value) and "v1" in str(err.value)
    patches = [c for c in apps.calls if c[0] == "patch"]
    assert patches == [("patch", NAME, "2"), ("patch", NAME, "1")]  # the new one, then the undo
    assert served_version(apps) == "1"
    assert apps.objects[(NS, NAME)]["metadata"]["labels"]["mlops/model-version"] == "1"


def test_failed_first_rollout_says_there_is_nothing_to_roll_back_to():
    apps, core = FakeApps(rollout="stuck"), FakeCore()
    apps.objects.clear()
    # a first rollout never reports generation 1 as stuck in the fake; force a stuck second read
    apply_serving(apps, core, docs(1), timeout_s=1, poll_s=0)
    apps.objects.clear()
    apps.rollout = "deadline"

    class NeverReady(FakeApps):
        def read_namespaced_deployment_status(self, name, namespace):
            obj = super().read_namespaced_deployment_status(name, namespace)
            obj["status"] = {"observed_generation": 1, "replicas": 2, "updated_replicas": 2, "available_replicas": 0}
            return obj

    never = NeverReady()
    with pytest.raises(RolloutFailed, match="no previous version"):
        apply_serving(never, core, docs(3), timeout_s=0.2, poll_s=0.05)


@pytest.mark.parametrize("uri", ["runs:/0123abcd/model", "s3://somebody-else/model", "models:/other_model/1",
                                 "file:///tmp/model", "models:/flight_delay/1/../../x"])
@pytest.mark.parametrize("where", ["annotation", "command"])
def test_a_model_from_outside_our_registry_is_never_applied(uri, where):
    d = docs(3)
    dep = d[0]
    if where == "annotation":
        dep["metadata"]["annotations"]["mlops/model-uri"] = uri
    else:
        cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
        cmd[cmd.index("--model-uri") + 1] = uri
    apps, core = FakeApps(), FakeCore()
    with pytest.raises(ValueError, match="only models:/flight_delay/<version> from our registry"):
        apply_serving(apps, core, d, timeout_s=5, poll_s=0)
    assert apps.calls == [] and core.calls == []  # nothing sent to the cluster


def test_serving_manifests_take_only_a_version_number():
    for bad in ["runs:/abc/model", "1; rm -rf /", "../2", ""]:
        with pytest.raises(ValueError, match="model version must be a number"):
            serving_manifests(bad, image="x")
