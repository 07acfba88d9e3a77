"""Promotion safety: sabotaged candidates never become champion, over repeated runs; a stale gate
never promotes; `mlops-rollback` moves champion back in one command, with who/why recorded."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.settings import get_settings
from tests.e2e.harness import service_env
from tests.reliability.helpers import module_home, register_model

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
WEEK = "2013-01-14"
CYCLE = [training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion]
# A broken feature pipeline: the schedule's time of day and the route scrambled across rows.
BROKEN = ["sched_dep_hour", "sched_arr_hour", "sched_duration_min", "origin_hour_departures", "carrier", "dest"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with module_home(tmp_path_factory, "promotion", days=("2013-01-01", "2013-01-20")) as h:
        r = dg.materialize(CYCLE, resources=build_resources(get_settings()), partition_key=WEEK)
        assert r.success
        yield h


def _client():
    from mlflow import MlflowClient

    from mlops_assets.lib import tracking

    s = get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    return MlflowClient()


def _alias(name="champion"):
    return str(_client().get_model_version_by_alias("flight_delay", name).version)


@pytest.mark.parametrize("sabotage", [
    {"shuffle_labels": True, "shuffle_seed": 1},
    {"shuffle_labels": True, "shuffle_seed": 2},
    {"shuffle_labels": True, "shuffle_seed": 3},
    {"break_features": BROKEN},
])
def test_sabotaged_candidates_never_become_champion(world, sabotage):
    before = _alias()
    r = dg.materialize(CYCLE, resources=build_resources(get_settings()), partition_key=WEEK, raise_on_error=False,
                       run_config={"ops": {"training_set": {"config": sabotage}}})
    assert r.success  # a blocked gate is a decision the platform takes, not a failed run
    evaluations = {e.check_name: (e.passed, e.severity.value) for e in (
        ev.event_specific_data for ev in r.all_events if ev.event_type_value == "ASSET_CHECK_EVALUATION")
                   if e.asset_key.to_user_string() == "challenger"}
    assert evaluations["gate_beats_champion"] == (False, "WARN")
    materialised = {e.event_specific_data.materialization.asset_key.to_user_string() for e in r.all_events
                    if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "challenger" in materialised and "champion" not in materialised
    assert _alias() == before
    latest = _client().get_model_version("flight_delay", _alias("challenger"))
    assert latest.tags["dagster_run_id"] == r.run_id and latest.tags["gate"] == "blocked"
    assert float(latest.tags["holdout_roc_auc"]) < float(latest.tags["champion_holdout_roc_auc"])
    # and the champion asset refuses it on its own too (started alone, e.g. from the UI)
    blocked = {"version": latest.version, "holdout": {"roc_auc": float(latest.tags["holdout_roc_auc"])},
               "champion_auc": float(latest.tags["champion_holdout_roc_auc"]), "champion_version": before,
               "data_window": "x", "gate": {"min_auc": 0.6, "min_delta": 0.0}}
    res = build_resources(get_settings())
    out = deployment.champion(context=dg.build_asset_context(partition_key=WEEK),
                              mlflow=res["mlflow"], lake=res["lake"], challenger=blocked)
    assert list(out) == []
    assert _alias() == before


def test_a_stale_gate_never_promotes_it_gates_again(world):
    """The gate compared the challenger with champion vA; if champion moved to vB meanwhile (another
    run, a rollback), promotion never acts on that stale comparison: under the champion lock it
    gates the challenger again against vB on the week's holdout, and promotes only if that passes."""
    from mlops_assets.lib import registry
    from mlops_assets.lib.features import feature_matrix
    from mlops_assets.lib.metrics import GateDecision
    from mlops_assets.lib.storage import Lake

    champ = _alias()
    # trained on shuffled labels: the stale comparison (AUC 0.99 against 0.5) says promote, the truth does not
    newer = register_model([f"2013-01-{d:02d}" for d in range(1, 21)], shuffle_seed=3,
                           tags={"week": WEEK, "gate": "passed"})
    stale = {"version": newer, "holdout": {"roc_auc": 0.99}, "champion_auc": 0.5, "champion_version": "0",
             "data_window": "x", "gate": {"min_auc": 0.6, "min_delta": 0.0}}
    res = build_resources(get_settings())
    out = list(deployment.champion(context=dg.build_asset_context(partition_key=WEEK), mlflow=res["mlflow"],
                                   lake=res["lake"], challenger=stale))
    assert out == [] and _alias() == champ
    tags = _client().get_model_version("flight_delay", newer).tags
    assert tags["regated_against"] == champ and "promoted_at" not in tags
    # what it decided is the gate's own rule on the week's holdout rows
    ts = Lake(get_settings().lake_uri).read("training_set", WEEK)
    ho = ts[ts["split"] == "holdout"]
    X = feature_matrix(ho)
    d = GateDecision.compare(ho["label"].to_numpy(), registry.load_version(newer).predict(X)["delay_probability"],
                             registry.load_version(champ).predict(X)["delay_probability"], min_auc=0.6, min_delta=0.0)
    assert not d.promote and d.describe() in tags["regate_decision"]


def _rollback(home, *args):
    return subprocess.run([str(BIN / "mlops-rollback"), *args], env=service_env(home), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_rollback_in_one_command(world):
    from mlops_assets.lib import registry

    home = world
    first = _alias()
    # a second version is promoted the way the champion asset does it
    second = register_model([f"2013-01-{d:02d}" for d in range(1, 21)], params={"C": 0.1},
                            tags={"week": "2013-01-21", "gate": "passed"})
    _client()
    registry.promote(second, expected_current=first, tags={"promoted_by_dagster_run": "test"})
    assert _alias() == second

    out = _rollback(home, "--reason", "live AUC dropped after deploy", "--by", "on-call")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _alias() == first
    client = _client()
    back, gone = client.get_model_version("flight_delay", first), client.get_model_version("flight_delay", second)
    assert back.tags["rolled_back_by"] == "on-call" and back.tags["rollback_reason"] == "live AUC dropped after deploy"
    assert back.tags["rolled_back_from"] == second
    assert gone.tags["demoted_by"] == "on-call"
    # the asset history says it too
    with dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
        ev = inst.get_latest_materialization_event(dg.AssetKey("champion"))
        md = ev.asset_materialization.metadata
        assert md["model_version"].value == first and md["previous_version"].value == second
        assert md["rolled_back_by"].value == "on-call" and "live AUC" in md["reason"].value
        assert ev.asset_materialization.partition == WEEK  # the week that made the version now serving
        dep = inst.get_latest_materialization_event(dg.AssetKey("model_deployment"))
        assert inst.get_run_by_id(dep.run_id).tags["mlops/rollback"] == f"v{second}->v{first}"
    # and the serving Deployment is re-rendered for it
    docs = list(yaml.safe_load_all((home / "deploy" / "serving.yaml").read_text()))
    deployment_doc = next(d for d in docs if d["kind"] == "Deployment")
    assert f"models:/flight_delay/{first}" in yaml.safe_dump(deployment_doc)

    # --to a named version: forward again
    out = _rollback(home, "--to", second, "--reason", "fixed upstream")
    assert out.returncode == 0, out.stderr
    assert _alias() == second


def test_rollback_refuses_what_it_must_and_changes_nothing(world):
    home = world
    champ = _alias()
    blocked = next(v for v in _client().search_model_versions("name='flight_delay'") if v.tags.get("gate") == "blocked")
    for args, why in [(["--to", str(blocked.version)], "blocked by the gate"), (["--to", "999"], "does not exist"),
                      (["--to", champ], "already the champion")]:
        out = _rollback(home, *args, "--reason", "test")
        assert out.returncode == 2, out.stdout + out.stderr
        assert why in out.stderr and "nothing changed" in out.stderr
        assert _alias() == champ
    out = _rollback(home, "--to", "1")  # --reason is required
    assert out.returncode == 2 and "--reason" in out.stderr
