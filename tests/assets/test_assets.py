"""Assets materialised in-process with ``dg.materialize`` on a few real days, in a temporary
MLOPS_HOME (its own landing zone, lake and MLflow store)."""

import dagster as dg
import pandas as pd
import pytest

from tests.helpers import range_tags
from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.lib.source import replay
from mlops_assets.settings import get_settings

DATA_ASSETS = [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
               features.flight_features, features.training_examples]




def checks_of(result):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed
            for e in (ev.event_specific_data for ev in result.all_events
                      if ev.event_type_value == "ASSET_CHECK_EVALUATION")}


@pytest.fixture
def data_home(home):
    s = get_settings()
    replay(s.landing_uri, "2013-01-10", "2013-01-01")
    r = dg.materialize(DATA_ASSETS, resources=build_resources(s), tags=range_tags("2013-01-01", "2013-01-09"))
    assert r.success
    return home, r


def test_ingestion_and_features_range_in_one_run(data_home):
    home, r = data_home
    lake = home / "lake"
    for asset in ("raw_flights", "raw_weather", "flight_outcomes", "flight_features", "training_examples"):
        files = sorted(p.name for p in (lake / asset).glob("*.parquet"))
        assert files == [f"2013-01-0{d}.parquet" for d in range(1, 10)], asset
    mats = r.get_asset_materialization_events()
    # One run, every partition of every asset materialised.
    assert len({m.step_key for m in mats}) == 5
    assert len(mats) == 5 * 9
    checks = checks_of(r)
    assert checks[("raw_flights", "no_leakage_columns")] is True
    assert checks[("flight_features", "no_leakage_columns")] is True
    assert all(checks.values()) and len(checks) == 7 + 6 + 8 + 4 + 3
    ex = pd.read_parquet(lake / "training_examples" / "2013-01-05.parquet")
    sched = pd.read_csv(home / "landing" / "schedules" / "2013-01-05.csv")
    assert len(ex) == len(sched) and ex["flight_id"].is_unique
    assert set(ex["status"]) <= {"arrived", "cancelled", "diverted"}


def test_bad_file_fails_clearly_and_keeps_the_previous_good_partition(data_home):
    home, _ = data_home
    s = get_settings()
    target = home / "lake" / "raw_flights" / "2013-01-05.parquet"
    before = target.read_bytes()
    landing = home / "landing" / "schedules" / "2013-01-05.csv"
    df = pd.read_csv(landing)
    df.drop(columns=["dest"]).to_csv(landing, index=False)

    r = dg.materialize(DATA_ASSETS, resources=build_resources(s), partition_key="2013-01-05", raise_on_error=False)
    assert not r.success
    failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
    msg = failure.event_specific_data.error.message + str(failure.event_specific_data.user_failure_data)
    for fragment in ("raw_flights", "schedules/2013-01-05.csv", "partition 2013-01-05", "column 'dest'"):
        assert fragment in msg, (fragment, msg)
    assert checks_of(r)[("raw_flights", "schema")] is False
    assert target.read_bytes() == before  # the previous good version, not a partial one
    # Nothing downstream ran for that partition.
    assert {m.asset_key.to_user_string() for m in r.get_asset_materialization_events()} <= {"raw_weather", "flight_outcomes"}
    assert not any(e.step_key == "flight_features" for e in r.all_events if e.event_type_value == "STEP_START")

    # A corrected file re-landed then succeeds.
    df.to_csv(landing, index=False)
    r = dg.materialize(DATA_ASSETS, resources=build_resources(s), partition_key="2013-01-05")
    assert r.success


def test_weekly_training_cycle_in_process(home):
    """training_set -> sweeps -> challenger + gate -> champion for one week, in-process."""
    from mlflow import MlflowClient

    from mlops_assets.lib import registry, tracking

    s = get_settings()
    replay(s.landing_uri, "2013-01-21", "2013-01-01")
    res = build_resources(s)
    assert dg.materialize(DATA_ASSETS, resources=res, tags=range_tags("2013-01-01", "2013-01-20")).success
    r = dg.materialize(
        [training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion],
        resources=res, partition_key="2013-01-14",
    )
    assert r.success
    checks = checks_of(r)
    assert checks[("challenger", "gate_quality_floor")] and checks[("challenger", "gate_beats_champion")]
    # the version was started in `mlflow models serve` and answered as batch does, before the alias moved
    assert checks[("challenger", "serving_infra_valid")]
    infra = next(e.event_specific_data for e in r.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "serving_infra_valid")
    assert infra.metadata["ran"].value is True and infra.metadata["max_abs_diff"].value <= 1e-6
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    champ = registry.alias_version("champion")
    assert champ is not None and champ.tags["week"] == "2013-01-14"
    assert champ.tags["dagster_run_id"] == r.run_id
    assert champ.tags["data_window"] == "2013-01-07..2013-01-20"
    client = MlflowClient()
    exp = client.get_experiment_by_name("flight_delay").experiment_id
    parents = client.search_runs([exp], f"tags.dagster_run_id = '{r.run_id}' and tags.mlops_role = 'parent'")
    trials = client.search_runs([exp], f"tags.dagster_run_id = '{r.run_id}' and tags.mlops_role = 'trial'")
    assert len(parents) == 1
    assert len(trials) == 3 * s.trials
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parents[0].info.run_id}
    assert all("valid_roc_auc" in t.data.metrics for t in trials)
    # a live prediction is never made by a model trained on that day
    with dg.instance_for_test() as inst:
        assert dg.materialize([deployment.model_deployment], resources=res, instance=inst).success
        leak = dg.materialize([deployment.flight_delay_predictions], resources=res, partition_key="2013-01-20",
                              raise_on_error=False, instance=inst)
    assert not leak.success
    failure = next(e for e in leak.all_events if e.event_type_value == "STEP_FAILURE")
    assert "deployed v" in str(failure.event_specific_data.user_failure_data.description)
    assert "trained on data up to 2013-01-20" in str(failure.event_specific_data.user_failure_data.description)


def test_champion_reapplies_the_gate_and_never_moves_on_a_blocked_challenger(home):
    """The champion asset re-applies the gate itself, whichever way it is started (e.g. alone,
    from the UI): a blocked challenger yields no materialisation and moves nothing."""
    from mlops_assets.lib import registry

    s = get_settings()
    res = build_resources(s)
    blocked = {"version": "7", "holdout": {"roc_auc": 0.52}, "champion_auc": None, "data_window": "x",
               "gate": {"min_auc": 0.60, "min_delta": 0.0}}
    out = deployment.champion(context=dg.build_asset_context(partition_key="2013-01-14"), mlflow=res["mlflow"],
                              lake=res["lake"], challenger=blocked)
    assert list(out) == []
    assert registry.alias_version("champion") is None
