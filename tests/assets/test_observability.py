"""What every step cost, where its logs are, and the platform-health picture, on real data."""

import os

import dagster as dg
import pandas as pd
import pytest

from tests.helpers import range_tags
from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.evaluation import assets as evaluation
from mlops_assets.defs.features import assets as features
from mlops_assets.defs.ingestion import assets as ingestion
from mlops_assets.defs.monitoring import assets as monitoring
from mlops_assets.defs.monitoring.health import platform_health
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training import assets as training
from mlops_assets.lib.source import replay
from mlops_assets.settings import get_settings

DATA = [ingestion.raw_flights, ingestion.raw_weather, ingestion.flight_outcomes,
        features.flight_features, features.training_examples]
LOGS = {"python_logs": {"managed_python_loggers": ["mlops_assets"], "python_log_level": "INFO"}}




def meta(result, key):
    (m,) = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key][:1]
    return {k: v.value for k, v in m.event_specific_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("obs")
    old = {k: os.environ.get(k) for k in ("MLOPS_HOME", "DAGSTER_HOME", "MLFLOW_TRACKING_URI")}
    os.environ.update(MLOPS_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()
    s = get_settings()
    replay(s.landing_uri, "2013-01-25", "2013-01-01")
    res = build_resources(s)
    with dg.instance_for_test(overrides=LOGS) as inst:
        def mat(assets, **kw):
            return dg.materialize(assets, resources=res, instance=inst, **kw)

        assert mat(DATA, tags=range_tags("2013-01-01", "2013-01-24")).success
        train = mat([training.training_set, *training.candidate_models, evaluation.challenger, deployment.champion],
                    partition_key="2013-01-14")
        assert train.success
        assert mat([deployment.model_deployment]).success
        assert mat([deployment.flight_delay_predictions, monitoring.feature_drift, monitoring.prediction_performance],
                   tags=range_tags("2013-01-21", "2013-01-24")).success
        # one failed run: a bad file re-landed
        bad = pd.read_csv(home / "landing" / "schedules" / "2013-01-25.csv").drop(columns=["dest"])
        bad.to_csv(home / "landing" / "schedules" / "2013-01-25.csv", index=False)
        assert not mat([ingestion.raw_flights], partition_key="2013-01-25", raise_on_error=False).success
        health = mat([platform_health])
        assert health.success
        yield {"home": home, "inst": inst, "train": train, "health": health}
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    get_settings.cache_clear()


def test_training_steps_record_plausible_resource_use(world):
    home = world["home"]
    ts = pd.read_parquet(home / "lake" / "training_set" / "2013-01-14.parquet")
    data_mb = ts.memory_usage(deep=True).sum() / 2**20
    for key in ("training_set", "candidate_models/torch_mlp", "candidate_models/hist_gradient_boosting"):
        m = meta(world["train"], key)
        assert m["peak_rss_mb"] > data_mb, key  # the process held at least the data it loaded
        assert 0 < m["cpu_seconds"] <= m["wall_seconds"] * os.cpu_count() + 0.5, key
        assert m["device"] in ("cpu",) or m["device"].startswith("NVIDIA"), key
    # and the trials' MLflow runs carry them too, with MLflow's own system metrics
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("flight_delay").experiment_id
    trial = client.search_runs([exp], "tags.mlops_role = 'trial' and tags.family = 'torch_mlp'")[0]
    assert trial.data.metrics["step_peak_rss_mb"] > data_mb
    assert any(k.startswith("system/") for k in trial.data.metrics), sorted(trial.data.metrics)


def test_feature_and_scoring_steps_record_resource_use(world):
    inst = world["inst"]
    for key in ("flight_features", "training_examples", "flight_delay_predictions"):
        ev = inst.get_latest_materialization_event(dg.AssetKey(key))
        md = ev.asset_materialization.metadata
        assert md["wall_seconds"].value > 0 and md["peak_rss_mb"].value > 50, key


def test_a_log_line_from_lib_is_in_the_trial_steps_logs(world):
    inst, run_id = world["inst"], world["train"].run_id
    logs = [e for e in inst.all_logs(run_id) if e.step_key and "train_torch_mlp_trial" in e.step_key]
    messages = [e.user_message for e in logs]
    assert any("torch_mlp epoch 1/" in m for m in messages), messages[:20]
    hgb = [e.user_message for e in inst.all_logs(run_id)
           if e.step_key and "train_hist_gradient_boosting_trial" in e.step_key]
    assert any("iteration" in m for m in hgb)


def test_platform_health_summarises_exactly_what_it_read(world):
    from mlops_assets.lib import registry

    home, inst = world["home"], world["inst"]
    m = meta(world["health"], "platform_health")
    champ = registry.alias_version("champion")
    assert m["champion_version"] == str(champ.version)
    perf = pd.read_parquet(home / "lake" / "prediction_performance" / "2013-01-24.parquet")
    assert m["live_roc_auc_latest"] == pytest.approx(float(perf["roc_auc"].iloc[0]))
    assert m["live_days"] == 4
    failed = inst.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert m["failed_runs_7d"] == len(failed) == 1
    drift = pd.read_parquet(home / "lake" / "feature_drift" / "2013-01-24.parquet")
    drift = drift[~drift["feature"].isin(["day_of_year", "month"])]
    assert m["max_psi_latest"] == pytest.approx(float(drift["psi"].max()))
    assert f"| {champ.version} |" in m["summary"] and failed[0].dagster_run.run_id in m["summary"]
    png = (home / "reports" / "platform_health.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(home / "reports" / "platform_health.png") as img:
        img.verify()
        assert img.size[0] >= 600 and img.size[1] >= 400
    assert m["chart"].startswith("![platform health](data:image/png;base64,")
