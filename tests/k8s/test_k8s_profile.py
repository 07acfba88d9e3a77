"""The k8s profile, run in-process (no cluster): the lake, landing zone and step I/O on an fsspec
object-store URI (``memory://``, the same code path as ``s3://``), MLflow from MLFLOW_TRACKING_URI
(dg.EnvVar), and model_deployment applying its manifests through the kubernetes client (here the
recording fake of its API objects), including a failed rollout that leaves the old version."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, fsspec, dagster as dg
from mlops_assets.settings import get_settings, ensure_dagster_home
from mlops_assets.lib.source import replay
from mlops_assets.lib.landing import scan
from mlops_assets.defs.resources import build_resources, KubernetesServing, ObjectStoreIOManager
from mlops_assets.defs.ingestion import assets as I
from mlops_assets.defs.features import assets as F
from mlops_assets.defs.training import assets as T
from mlops_assets.defs.evaluation import assets as E
from mlops_assets.defs.deployment import assets as D
from tests.k8s.fake_kube import FakeApps, FakeCore

s = get_settings()
ensure_dagster_home(s)
out = {"profile": s.profile}
replay(s.landing_uri, "2013-01-21", "2013-01-01")
files, _ = scan(s.landing_uri, {})
days = set(files["schedules"]) & set(files["weather"])
out["landing_days"] = len(days)
res = build_resources(s)
out["io_manager"] = type(res["io_manager"]).__name__
out["kubernetes_apply"] = res["kubernetes"].apply

APPS, CORE = FakeApps(), FakeCore()
class FakeServing(KubernetesServing):
    def clients(self):
        return APPS, CORE
res["kubernetes"] = FakeServing(apply=True, rollout_timeout_s=1)

with dg.DagsterInstance.get() as inst:
    r = dg.materialize([I.raw_flights, I.raw_weather, I.flight_outcomes, F.flight_features, F.training_examples],
                       resources=res, instance=inst, tags={"dagster/asset_partition_range_start": "2013-01-01",
                                                           "dagster/asset_partition_range_end": "2013-01-20"})
    assert r.success
    for week in ("2013-01-14",):
        r = dg.materialize([T.training_set, *T.candidate_models, E.challenger, D.champion], resources=res,
                           instance=inst, partition_key=week)
        assert r.success
    r = dg.materialize([D.model_deployment], resources=res, instance=inst)
    assert r.success
    md = r.asset_materializations_for_node("model_deployment")[0].metadata
    out["first"] = {"rollout": md["rollout"].value, "revision": md["deployment_revision"].value,
                    "version": md["model_version"].value}
    # A second deployment of the same version whose rollout fails: undone, old template serving.
    APPS.rollout = "deadline"
    APPS.objects[("mlops", "flight-delay-serving")]["spec"]["template"]["metadata"]["labels"]["mlops/model-version"] = "0"
    r = dg.materialize([D.model_deployment], resources=res, instance=inst, raise_on_error=False)
    out["second_success"] = r.success
    failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
    out["second_error"] = failure.event_specific_data.error.message
    out["served_after_failure"] = APPS.objects[("mlops", "flight-delay-serving")]["spec"]["template"]["metadata"]["labels"]["mlops/model-version"]
    out["apps_calls"] = [c[0] for c in APPS.calls]
fs = fsspec.filesystem("memory")
out["lake_has_training_set"] = fs.exists("/lake/training_set/2013-01-14.parquet")
out["io_objects"] = len(fs.find("/lake/_dagster_io"))
print("RESULT " + json.dumps(out))
"""


def test_k8s_profile_on_object_storage_with_kubernetes_apply(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update({
        "MLOPS_PROFILE": "k8s", "MLOPS_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
        "MLOPS_LANDING_URI": "memory://landing", "MLOPS_LAKE_URI": "memory://lake",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLOPS_TRAIN_WEEKS": "2", "MLOPS_TRIALS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore",
    })
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert res["profile"] == "k8s" and res["landing_days"] == 21
    assert res["io_manager"] == "ObjectStoreIOManager" and res["kubernetes_apply"] is True
    assert res["lake_has_training_set"] and res["io_objects"] > 0  # step outputs in the object store
    assert res["first"]["rollout"] == "created" and res["first"]["revision"] == "1"
    assert res["second_success"] is False
    assert "rolled back" in res["second_error"] and "progress deadline exceeded" in res["second_error"]
    assert res["served_after_failure"] == "0"  # the previous template, not the failed one
    assert res["apps_calls"].count("patch") == 2  # the new template, then the undo
    assert not (tmp_path / "home" / "lake").exists()  # nothing went to the local disk
