"""The model-health sensor on real data: a champion trained on January weeks (holdout 2013-01-21)
stays healthy on the week right after, and decays on a summer week (the delay rate more than doubles); then it requests
retraining for the latest complete week, with the reason in the run tags, and records each
verdict as an observation of that day's prediction_performance."""

import dagster as dg
import pytest

from tests.helpers import range_tags
from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.monitoring import assets as monitoring
from mlops_assets.defs.monitoring.sensors import model_health_sensor
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.lib.source import replay
from mlops_assets.settings import get_settings

DATA = [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
        features.flight_features, features.training_examples]
SCORING = [deployment.flight_delay_predictions, monitoring.feature_drift, monitoring.prediction_performance]




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("health")
    old = {k: os.environ.get(k) for k in ("MLOPS_HOME", "DAGSTER_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()
    s = get_settings()
    replay(s.landing_uri, "2013-02-04", "2013-01-01")
    replay(s.landing_uri, "2013-07-01", "2013-06-24")
    res = build_resources(s)
    with dg.instance_for_test() as instance:
        def mat(assets, **kw):
            r = dg.materialize(assets, resources=res, instance=instance, **kw)
            assert r.success
            return r

        mat(DATA, tags=range_tags("2013-01-01", "2013-02-03"))
        mat(DATA, tags=range_tags("2013-06-24", "2013-06-30"))
        mat([training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion],
            partition_key="2013-01-21")
        mat([deployment.model_deployment])
        yield instance, mat
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


def evaluate(instance):
    return model_health_sensor(dg.build_sensor_context(instance=instance, resources=build_resources(get_settings())))


def test_a_healthy_week_requests_nothing(world):
    instance, mat = world
    mat(SCORING, tags=range_tags("2013-01-28", "2013-02-03"))
    result = evaluate(instance)
    assert not result.run_requests, result.run_requests
    assert "healthy" in result.skip_reason.skip_message, result.skip_reason
    # the verdict of the newest labelled day is recorded beside its live performance
    (obs,) = result.asset_events
    assert obs.partition == "2013-02-03" and obs.metadata["health_verdict"].value == "healthy"
    assert obs.metadata["health_live_auc"].value > 0.6


def test_a_summer_week_decays_and_requests_retraining_once_per_week(world):
    instance, mat = world
    mat(SCORING, tags=range_tags("2013-06-24", "2013-06-30"))
    result = evaluate(instance)
    (req,) = result.run_requests
    assert req.partition_key == "2013-06-24"  # the latest week with all 7 days labelled
    assert req.run_key == "train:2013-06-24"  # Dagster launches a run key once per sensor
    reason = req.tags["mlops/retrain_reason"]
    assert reason.startswith("calibration"), reason  # a January model predicts ~20% delays; ~45% happen
    assert req.tags["mlops/retrain_kind"] == "health" and req.tags["mlops/retrain_policy"] == "health"
    assert req.tags["mlops/health_days"] == ",".join(f"2013-06-{d}" for d in range(24, 31))
    assert req.tags["mlops/trigger"] == "model_health_sensor"
    assert result.asset_events[0].metadata["health_verdict"].value == "decayed"


def test_on_the_same_decayed_week_frozen_asks_nothing_and_weekly_asks_the_week(world, monkeypatch):
    """The other two policies, on the same real state (a January champion deployed, its summer week
    decayed): `frozen` never trains after its cold start, whatever the verdict; `weekly` asks for
    the latest complete week, verdict or not. (tests/e2e/test_year.py runs `weekly` and `health`
    through the real daemon; this is `frozen`'s branch of the same sensor.)"""
    instance, _ = world  # the summer week was scored by the test above
    for policy, expected in (("frozen", None), ("weekly", "2013-06-24")):
        monkeypatch.setenv("MLOPS_RETRAIN_POLICY", policy)
        get_settings.cache_clear()
        result = evaluate(instance)
        assert result.asset_events[0].metadata["health_verdict"].value == "decayed"  # the same verdict
        if expected is None:
            assert not result.run_requests, (policy, result.run_requests)
            assert result.skip_reason.skip_message.startswith("frozen: nothing to train"), result.skip_reason
        else:
            (req,) = result.run_requests
            assert (req.partition_key, req.tags["mlops/retrain_kind"]) == (expected, "weekly"), req.tags
    monkeypatch.delenv("MLOPS_RETRAIN_POLICY")
    get_settings.cache_clear()


def test_drift_metadata_on_real_days(world):
    """feature_drift keeps `features_major_drift` (an integer: features above their calibrated
    threshold) and adds the model's output drift; the champion's own January week raises fewer
    alarms than the summer week, and the PSI it reports is the row's."""
    instance, _ = world  # both weeks were scored by the tests above
    from mlops_assets.lib.storage import Lake

    lake = Lake(get_settings().lake_uri)
    winter, summer = lake.read("feature_drift", "2013-02-03"), lake.read("feature_drift", "2013-06-30")
    for rep in (winter, summer):
        assert {"threshold", "alarm", "importance", "kind"} <= set(rep.columns)
        assert (rep["alarm"] == (rep["psi"] > rep["threshold"])).all()
        assert (rep["kind"] == "output").sum() == 1
    assert winter["alarm"].sum() < summer["alarm"].sum()
    assert summer.set_index("feature").loc["temp", "alarm"]  # July against a January reference
    recs = instance.fetch_materializations(dg.AssetKey("feature_drift"), limit=10).records
    md = [r.asset_materialization.metadata for r in recs]
    assert all(isinstance(m["features_major_drift"].value, int) for m in md)
    assert any(m["features_major_drift"].value == int(summer[summer["kind"] != "output"]["alarm"].sum()) for m in md)
    assert all("output_psi" in m and "weighted_drift_share" in m for m in md)
