"""Shared fixtures, and how the suite runs in parallel.

Small sweeps and windows keep the suite fast; each test that touches state gets its own
MLOPS_HOME (landing zone, lake, MLflow SQLite store, Dagster instance).

``make test`` runs the suite on pytest-xdist workers (``--dist loadscope``, with our units). Every test module is
one unit of work, so a module's fixtures are built once, on one worker; the production-topology
modules form two units, each starting its services once. The units start heaviest first (the
longest chains set the suite's wall time). Each worker takes ports from a block of its own
(tests/helpers.free_port), and the local demo home is built once per run for every worker
(``local_demo``). A test marked ``alone`` cannot share the machine; ``make test`` runs those after
the others, without workers.
"""

import os

# Set before any mlops_assets module reads its settings (they are read at import).
os.environ.setdefault("MLOPS_TRIALS", "2")
os.environ.setdefault("MLOPS_TRAIN_WEEKS", "2")
os.environ.setdefault("MLOPS_MAX_CONCURRENT", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pytest  # noqa: E402

# Work units in the order they start (heaviest and longest first; measured with --durations):
# the rest follow in collection order. A unit is a module, or a named group of modules.
GROUPS = {
    "tests/topology/test_production.py": "topology-production",  # the demo on the services
    "tests/topology/test_faults.py": "topology-services",
    "tests/topology/test_promotion_race.py": "topology-services",
    "tests/topology/test_store.py": "topology-services",
}
# Modules whose tests share no fixture: each test is a unit of its own.
SPLIT = {"tests/test_bench_smoke.py", "tests/reliability/test_orphaned_runs.py"}
FIRST = [
    "tests/e2e/test_demo.py",  # builds the local demo the production topology compares with
    "tests/e2e/test_year.py",
    "topology-production",
    "tests/test_bench_smoke.py",
    "topology-services",
    "tests/e2e/test_sensors.py",
    "tests/reliability/test_concurrency.py",
    "tests/e2e/test_ui.py",
    "tests/k8s/test_step_sizes.py",
    "tests/e2e/test_launch_paths.py",
    "tests/reliability/test_orphaned_runs.py",
    "tests/reliability/test_mlflow_outage.py",
]


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, a named group of modules, or itself."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in SPLIT else GROUPS.get(path, path)


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduler, with our units for scopes and the units in the order the
    collection puts them (heaviest first, below) instead of by their number of tests. (Not the
    `xdist_group` mark: pytest-xdist 3.8 renames the test ids for it, which pytest 9 ignores.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return Units(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    key = (lambda it: rank.get(GROUPS.get(it.nodeid.split("::", 1)[0], it.nodeid.split("::", 1)[0]), len(rank)))
    items.sort(key=key)  # stable: collection order otherwise


_CONTROLLER = False  # the xdist controller: it receives every worker's hooks again


def pytest_configure(config):
    global _CONTROLLER
    _CONTROLLER = bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ


def _timeline(event: str, nodeid: str) -> None:
    """With MLOPS_TEST_TIMELINE=<file>, each worker appends when each test starts and ends: which
    chain of units sets the suite's wall time, and the CPU seconds of the worker and of the processes
    it started and reaped (bench/test_timeline.py reads it)."""
    path = os.environ.get("MLOPS_TEST_TIMELINE")
    if path and not _CONTROLLER:
        import time

        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # children: those reaped so far
        with open(path, "a") as f:
            f.write(f"{time.time():.2f}\t{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{event}\t{nodeid}"
                    f"\t{cpu:.2f}\n")


def pytest_runtest_logstart(nodeid, location):
    _timeline("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _timeline("end", nodeid)


def shared_dir(tmp_path_factory):
    """A folder every worker of this pytest run sees (the run's base temp folder)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MLOPS_HOME (and DAGSTER_HOME inside it) for one test."""
    from mlops_assets.settings import ensure_dagster_home, get_settings

    h = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_HOME", str(h))
    monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
    # mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI: keep it from leaking between tests.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    ensure_dagster_home(init_storage=False)  # tests that need the instance's storages create them
    yield h
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()


# The demo as the e2e test and the production-topology test both run it (the latter compares: the
# topology changes no result). Both run each run's steps in the run's process, the default on 2 CPUs:
# with a process per step the same demo took 116.7 CPU seconds against 56.3 and gave the same numbers
# (2026-12-05); the multiprocess executor is run end to end by tests/e2e/test_backfills.py.
DEMO_ARGS = ["--until-week", "2013-01-21", "--score-days", "2"]
DEMO_ENV = {"MLOPS_TRAIN_WEEKS": "2", "MLOPS_TRIALS": "2", "MLOPS_EXECUTOR": "in_process"}


def run_demo(env: dict, json_path, **overrides: str) -> str:
    """``mlops-demo`` as DEMO_ARGS and DEMO_ENV say (``overrides`` replace DEMO_ENV's settings)."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "mlops-demo"), *DEMO_ARGS, "--json", str(json_path)],
                         env={**env, **DEMO_ENV, **overrides}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def demo_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_LAKE_URI",
                                                             "MLOPS_LANDING_URI")}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), **DEMO_ENV})
    return env


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory):
    """``mlops-demo`` on the embedded default (SQLite instance, local MLflow store, local lake) on a
    short window: (home, env, stdout); its numbers in ``home/demo.json``. Built once per pytest run
    and shared, read-only, by every worker (the first to ask builds it under a lock, the others
    wait for it): a test that writes works on a copy (tests/helpers.copy_home)."""
    from filelock import FileLock

    root = shared_dir(tmp_path_factory)
    home = root / "local-demo"
    with FileLock(str(root / "local-demo.lock")):
        if not (home / "demo.stdout").exists():
            import shutil

            shutil.rmtree(home, ignore_errors=True)  # what a failed attempt left
            home.mkdir()
            stdout = run_demo(demo_env(home), home / "demo.json")
            (home / "demo.stdout").write_text(stdout)  # written last: its presence means "built"
    return home, demo_env(home), (home / "demo.stdout").read_text()
