"""Shadow challengers on real days: the challenger scores beside the champion without ever being
served, both are compared on the same flights once outcomes land, and with
MLOPS_SHADOW_PROMOTE_DAYS a shadow that is significantly better live is promoted."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.monitoring import assets as monitoring
from mlops_assets.defs.monitoring.sensors import shadow_promotion_sensor
from mlops_assets.defs.resources import build_resources
from mlops_assets.lib import shadow as shadow_lib
from mlops_assets.lib.metrics import paired_auc_difference
from mlops_assets.settings import get_settings
from tests.reliability.helpers import module_home, register_model

TRAIN = [f"2013-01-{d:02d}" for d in range(1, 14)]
SCORED = ("2013-01-14", "2013-01-20")
WINDOW = {"data_window": "2013-01-01..2013-01-13", "gate_floor": "passed"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with module_home(tmp_path_factory, "shadow", days=("2013-01-01", "2013-01-20")) as home:
        from mlops_assets.lib import registry

        # a champion that learned from shuffled labels, and a sound challenger beside it
        champion = register_model(TRAIN, alias="champion", shuffle_seed=1, tags=WINDOW)
        shadow = register_model(TRAIN, alias="challenger", tags=WINDOW)
        res = build_resources(get_settings())
        with dg.instance_for_test() as instance:
            assert dg.materialize([deployment.model_deployment], resources=res, instance=instance).success
            r = dg.materialize([deployment.flight_delay_predictions, monitoring.prediction_performance], resources=res,
                               instance=instance, tags={"dagster/asset_partition_range_start": SCORED[0],
                                                        "dagster/asset_partition_range_end": SCORED[1]})
            assert r.success
            yield home, instance, res, registry, champion, shadow


def test_shadow_rows_are_never_served(world):
    home, _, _, registry, champion, shadow = world
    lake = home / "lake"
    for day in pd.date_range(*SCORED).strftime("%Y-%m-%d"):
        served = pd.read_parquet(lake / "flight_delay_predictions" / f"{day}.parquet")
        sh = pd.read_parquet(lake / "shadow_predictions" / f"{day}.parquet")
        assert set(served["model_version"]) == {champion} and "role" not in served
        assert set(sh["model_version"]) == {shadow} and set(sh["role"]) == {"shadow"}
        assert sorted(sh["flight_id"]) == sorted(served["flight_id"])
        assert not np.allclose(sh.sort_values("flight_id")["delay_probability"],
                               served.sort_values("flight_id")["delay_probability"])
    manifest = (home / "deploy" / "serving.yaml").read_text()
    assert f"models:/flight_delay/{champion}" in manifest and f"models:/flight_delay/{shadow}" not in manifest


def test_the_live_comparison_is_on_the_same_flights(world):
    home, *_ = world
    lake = home / "lake"
    day = SCORED[1]
    perf = pd.read_parquet(lake / "prediction_performance" / f"{day}.parquet").set_index("role")
    served = pd.read_parquet(lake / "flight_delay_predictions" / f"{day}.parquet")
    sh = pd.read_parquet(lake / "shadow_predictions" / f"{day}.parquet")
    labels = pd.read_parquet(lake / "training_examples" / f"{day}.parquet")
    j = shadow_lib.joined(served, sh, labels)
    assert perf.loc["shadow", "paired_flights"] == len(j) == perf.loc["champion", "n"] == perf.loc["shadow", "n"]
    d = paired_auc_difference(j["label"], j["p_shadow"], j["p_champion"])
    assert perf.loc["shadow", "auc_delta"] == pytest.approx(d["auc_delta"], abs=1e-12)
    assert perf.loc["shadow", "auc_delta_ci_low"] == pytest.approx(d["auc_delta_ci_low"], abs=1e-12)
    assert perf.loc["shadow", "roc_auc"] - perf.loc["champion", "roc_auc"] == pytest.approx(d["auc_delta"], abs=1e-12)


def test_predictions_come_from_the_deployment_not_the_alias(world):
    """Each row names the model_deployment run that made its version the served one; moving the
    `champion` alias alone (no deployment) changes nothing that is scored."""
    from mlflow import MlflowClient

    home, instance, res, registry, champion, shadow = world
    deployed = instance.fetch_materializations(dg.AssetKey("model_deployment"), limit=1).records[0].run_id
    day = SCORED[1]
    served = pd.read_parquet(home / "lake" / "flight_delay_predictions" / f"{day}.parquet")
    assert set(served["deployment_run_id"]) == {deployed}
    client = MlflowClient()
    client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, shadow)
    try:
        r = dg.materialize([deployment.flight_delay_predictions], resources=res, instance=instance, partition_key=day)
        assert r.success
        mat = r.get_asset_materialization_events()[0].materialization.metadata
        assert mat["model_version"].value == champion and mat["deployment_run_id"].value == deployed
        again = pd.read_parquet(home / "lake" / "flight_delay_predictions" / f"{day}.parquet")
        assert set(again["model_version"]) == {champion}
    finally:
        client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, champion)


def test_a_shadow_significantly_better_live_is_promoted_after_n_days(world, monkeypatch):
    _, instance, res, registry, champion, shadow = world
    # off by default: compared, never promoted
    assert isinstance(shadow_promotion_sensor(dg.build_sensor_context(instance=instance, resources=build_resources(get_settings()))), dg.SkipReason)
    assert str(registry.alias_version("champion").version) == champion
    monkeypatch.setenv("MLOPS_SHADOW_PROMOTE_DAYS", "10")  # more days than it has: not yet
    get_settings.cache_clear()
    skip = shadow_promotion_sensor(dg.build_sensor_context(instance=instance, resources=build_resources(get_settings())))
    assert isinstance(skip, dg.SkipReason) and "7 of 10 labelled days" in skip.skip_message
    monkeypatch.setenv("MLOPS_SHADOW_PROMOTE_DAYS", "3")
    get_settings.cache_clear()
    req = shadow_promotion_sensor(dg.build_sensor_context(instance=instance, resources=build_resources(get_settings())))
    assert isinstance(req, dg.RunRequest) and req.run_key == f"shadow:{shadow}:over:{champion}"
    r = dg.materialize([deployment.shadow_promotion, deployment.model_deployment], resources=build_resources(get_settings()),
                       instance=instance)
    assert r.success
    assert str(registry.alias_version("champion").version) == shadow
    tags = registry.alias_version("champion").tags
    assert tags["promoted_by"] == "shadow" and tags["shadow_decision"].startswith("PROMOTE")
    get_settings.cache_clear()


def test_equal_models_in_shadow_are_not_promoted():
    rng = np.random.default_rng(0)
    by_day = {}
    for i in range(7):
        y = rng.random(900) < 0.2
        s = y + rng.normal(0, 1.4, len(y))
        to_p = lambda x: 1 / (1 + np.exp(-(x - 1.2)))  # noqa: E731
        by_day[f"2013-02-{i + 1:02d}"] = pd.DataFrame({"flight_id": range(len(y)), "label": y.astype(int),
                                                       "p_champion": to_p(s + rng.normal(0, 0.8, len(y))),
                                                       "p_shadow": to_p(s + rng.normal(0, 0.8, len(y)))})
    d = shadow_lib.decide(by_day, shadow="2", champion="1", days=7)
    assert not d.promote and d.reason.startswith("KEEP") and d.comparison["flights"] == 7 * 900
    assert not shadow_lib.eligible({"gate_floor": "failed"}, champion="1", version="2", first_day="2013-02-01")
    assert not shadow_lib.eligible({"gate_floor": "passed", "data_window": "2013-01-01..2013-02-03"},
                                   champion="1", version="2", first_day="2013-02-01")
    assert shadow_lib.eligible({"gate_floor": "passed", "data_window": "2013-01-01..2013-01-31"},
                               champion="1", version="2", first_day="2013-02-01")

