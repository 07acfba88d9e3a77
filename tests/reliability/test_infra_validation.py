"""Infra validation on the real serving process: a version that serves the batch answers passes; one
whose server cannot start, and one that serves other answers than batch, fail, and `champion`
does not move for either."""

import sys

import cloudpickle
import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_assets.defs.deployment import assets as deployment
from mlops_assets.defs.resources import build_resources
from mlops_assets.lib.features import FEATURE_COLUMNS
from mlops_assets.lib.infra_validation import validate_serving
from mlops_assets.settings import get_settings
from tests.reliability.helpers import module_home, register_model

DAYS = [f"2013-01-{d:02d}" for d in range(1, 10)]


class CannotStart(mlflow.pyfunc.PythonModel):
    """Loads in the process that logged it, fails in any other (as a model does that needs a system
    library or a file only the training machine has)."""

    def __init__(self):
        import os

        self.trained_in = os.getpid()

    def load_context(self, context):
        import os

        if os.getpid() != self.trained_in:
            raise RuntimeError("libgomp.so.1: cannot open shared object file")

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"delay_probability": np.full(len(model_input), 0.2)})


class ServesOtherAnswers(mlflow.pyfunc.PythonModel):
    """Answers differently behind the server than in batch (a preprocessing step that depends on
    the environment, a float32 path)."""

    def predict(self, context, model_input, params=None):
        import os

        p = np.clip(model_input["sched_dep_hour"].to_numpy(dtype=float) / 30.0, 0.01, 0.99)
        if os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true":
            p = p + 1e-3
        return pd.DataFrame({"delay_probability": p})


# the server process unpickles these without importing this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with module_home(tmp_path_factory, "infra", days=(DAYS[0], DAYS[-1])):
        from mlops_assets.lib import registry
        from mlops_assets.lib.storage import Lake

        champion = register_model(DAYS, alias="champion")
        s = get_settings()
        rows = Lake(s.lake_uri).read("flight_features", DAYS[-1])[FEATURE_COLUMNS].head(50)
        yield champion, rows, registry, s


def _register(registry, model) -> str:
    from mlops_assets.lib import tracking

    exp = tracking.configure(get_settings().tracking_uri, get_settings().mlflow_artifact_root)
    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=model, pip_requirements=["mlflow"])
    return registry.register(info.model_uri, {"mlflow_run_id": run.info.run_id, "gate": "passed"})


def _champion_step(challenger_version, champion, infra) -> list:
    value = {"version": challenger_version, "holdout": {"roc_auc": 0.9}, "champion_auc": 0.6,
             "champion_version": champion, "data_window": "x", "gate": {"min_auc": 0.6, "min_delta": 0.0},
             "infra": infra}
    res = build_resources(get_settings())
    return list(deployment.champion(context=dg.build_asset_context(partition_key="2013-01-07"),
                                    mlflow=res["mlflow"], lake=res["lake"], challenger=value))


def test_a_version_that_serves_the_batch_answers_passes(world):
    champion, rows, registry, s = world
    expected = registry.load_version(champion).predict(rows)["delay_probability"].to_numpy()
    res = validate_serving(registry.version_uri(champion), rows, expected, tracking_uri=s.tracking_uri)
    assert res.passed, res.reason
    assert res.rows == 50 and res.max_abs_diff <= 1e-6 and 0 < res.p99_ms <= res.p99_budget_ms
    # and a budget no server can meet fails on latency alone
    slow = validate_serving(registry.version_uri(champion), rows, expected, tracking_uri=s.tracking_uri,
                            p99_budget_ms=0.01, latency_requests=5)
    assert not slow.passed and "p99 latency" in slow.reason and slow.max_abs_diff <= 1e-6


def test_a_version_whose_server_cannot_start_is_not_promoted(world):
    champion, rows, registry, s = world
    version = _register(registry, CannotStart())
    expected = registry.load_version(version).predict(rows)["delay_probability"].to_numpy()  # batch is fine
    res = validate_serving(registry.version_uri(version), rows, expected, tracking_uri=s.tracking_uri)
    assert not res.passed and "exited" in res.reason and "libgomp" in res.reason, res.reason
    assert _champion_step(version, champion, res.as_dict()) == []
    assert str(registry.alias_version(registry.CHAMPION).version) == champion


def test_a_version_that_serves_other_answers_is_not_promoted(world):
    champion, rows, registry, s = world
    version = _register(registry, ServesOtherAnswers())
    expected = registry.load_version(version).predict(rows)["delay_probability"].to_numpy()
    res = validate_serving(registry.version_uri(version), rows, expected, tracking_uri=s.tracking_uri)
    assert not res.passed and "differ from the batch predictions" in res.reason, res.reason
    assert res.max_abs_diff == pytest.approx(1e-3, rel=1e-6)
    assert _champion_step(version, champion, res.as_dict()) == []
    assert str(registry.alias_version(registry.CHAMPION).version) == champion


def test_a_server_started_ahead_serves_the_version_named_later_and_only_it(world):
    """``challenger`` starts the serving process before its version exists (the imports overlap
    the evaluation): it then loads exactly the version named, and a failing one still fails; a
    process never given a version exits by itself when closed."""
    from mlops_assets.lib.infra_validation import ServingProcess, validate_version

    champion, rows, registry, s = world
    ahead = ServingProcess(tracking_uri=s.tracking_uri)
    res = validate_version(champion, rows, rows=20, tracking_uri=s.tracking_uri, server=ahead)
    assert res.passed and res.rows == 20 and res.model_uri == registry.version_uri(champion), res.reason
    assert ahead.proc.poll() is not None  # stopped with the validation
    bad = _register(registry, ServesOtherAnswers())
    res = validate_version(bad, rows, tracking_uri=s.tracking_uri, server=ServingProcess(tracking_uri=s.tracking_uri))
    assert not res.passed and "differ from the batch predictions" in res.reason, res.reason
    idle = ServingProcess(tracking_uri=s.tracking_uri)
    idle.close()
    assert idle.proc.returncode is not None
    with ServingProcess(registry.version_uri(champion)) as started, pytest.raises(RuntimeError, match="already serves"):
        started.serve(registry.version_uri(bad))


def test_the_request_body_carries_every_row_exactly():
    """What the validation sends must be the rows themselves: MLflow's own parser reads back every
    value bit for bit (pandas' to_json would round 7.916666666666667 to 7.9166666667)."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from mlops_assets.lib.infra_validation import request_body

    rows = pd.DataFrame({"sched_dep_hour": [7 + 55 / 60, 11 + 10 / 60], "temp": [np.nan, 35.06],
                         "carrier": ["AA", "UA"], "day_of_week": [5.0, 0.0]})
    parsed = infer_and_parse_data(__import__("json").loads(request_body(rows)))
    parsed = parsed[0] if isinstance(parsed, tuple) else parsed
    pd.testing.assert_frame_equal(parsed[rows.columns], rows, check_exact=True)
