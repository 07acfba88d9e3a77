"""The model-health sensor on real data: a champion trained on January weeks stays healthy on the
days right after, and decays on summer days (delays double, weather is new); then it requests
retraining for the latest complete week, with the reason in the run tags."""

import dagster as dg
import pytest

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


def rng(a, b):
    return {"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b}


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
    replay(s.landing_uri, "2013-01-25", "2013-01-01")
    replay(s.landing_uri, "2013-07-01", "2013-06-24")
    res = build_resources(s)
    with dg.instance_for_test() as instance:
        def mat(assets, **kw):
            r = dg.materialize(assets, resources=res, instance=instance, **kw)
            assert r.success
            return r

        mat(DATA, tags=rng("2013-01-01", "2013-01-24"))
        mat(DATA, tags=rng("2013-06-24", "2013-06-30"))
        mat([training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion],
            partition_key="2013-01-14")
        mat([deployment.model_deployment])
        yield instance, mat
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


def evaluate(instance):
    return model_health_sensor(dg.build_sensor_context(instance=instance))


def test_healthy_days_request_nothing(world):
    instance, mat = world
    mat(SCORING, tags=rng("2013-01-21", "2013-01-23"))
    result = evaluate(instance)
    assert isinstance(result, dg.SkipReason), result
    assert "healthy" in result.skip_message


def test_summer_days_decay_and_request_retraining_once_per_week(world):
    instance, mat = world
    mat(SCORING, tags=rng("2013-06-28", "2013-06-30"))
    req = evaluate(instance)
    assert isinstance(req, dg.RunRequest), req
    assert req.partition_key == "2013-06-24"  # the latest week with all 7 days labelled
    assert req.run_key == "retrain:2013-06-24"  # Dagster launches a run key once per sensor
    reason = req.tags["mlops/retrain_reason"]
    assert "log loss" in reason or "ROC AUC" in reason or "drift" in reason
    assert req.tags["mlops/health_days"] == "2013-06-28,2013-06-29,2013-06-30"
    assert req.tags["mlops/trigger"] == "model_health_sensor"
