"""Two promotions at once against the real MLflow server: the champion lock (a PostgreSQL advisory
lock) lets one move the alias; the other then finds champion moved, gates its challenger again
against the new champion, and acts on that decision, never on its stale one."""

import subprocess
import sys
from pathlib import Path

import dagster as dg


BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
WEEKS = ("2013-01-21", "2013-01-28")


def test_two_promotions_at_once_one_wins_the_other_gates_again(services, pointed):
    from mlflow import MlflowClient

    from mlops_assets.defs.evaluation import assets as evaluation
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.defs.training import assets as training
    from mlops_assets.lib import registry, tracking
    from mlops_assets.settings import get_settings
    from tests.reliability.helpers import ingest, register_model

    server = services.extra_mlflow("mlflow_race")
    try:
        services.pg.create_database("dagster_race")
        home, env = pointed(MLOPS_LAKE_URI="s3://lake/race", MLOPS_LANDING_URI="s3://landing/race",
                            MLFLOW_TRACKING_URI=server.url, MLOPS_INFRA_VALIDATION="off",
                            DAGSTER_PG_URL=services.pg.url("dagster_race"))
        ingest("2013-01-01", "2013-02-03")
        s = get_settings()
        tracking.configure(s.tracking_uri)
        # a weak champion (shuffled labels) that both weeks' challengers clearly beat
        weak = register_model([f"2013-01-{d:02d}" for d in range(1, 21)], shuffle_seed=5,
                              tags={"week": "2013-01-14", "gate": "passed"})
        registry.set_alias(registry.CHAMPION, weak)
        gated = [training.training_set, *training.candidate_models, evaluation.challenger]
        challengers = {}
        for week in WEEKS:
            r = dg.materialize(gated, resources=build_resources(s), partition_key=week)
            assert r.success
            challengers[week] = r.output_for_node("challenger")
            assert challengers[week]["champion_version"] == weak and challengers[week]["decision"]
        from mlops_assets.lib.metrics import gate_from
        assert all(gate_from(c).promote for c in challengers.values()), "both must pass against the weak one"

        # the instance's tables exist before two processes open it (two processes creating a fresh
        # PostgreSQL schema at once race: "type snapshots already exists", seen once in CI)
        subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=300)
        # both champion steps at once, each in its own process (as two runs' step workers would be)
        procs = {week: subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets.definitions", "--select", "champion",
             "--partition", week], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for week in WEEKS}
        outs = {week: p.communicate(timeout=600)[0] for week, p in procs.items()}
        for week, p in procs.items():
            assert p.returncode == 0, outs[week][-3000:]
        # the two runs overlapped in time (the instance in PostgreSQL says when each started and ended)
        (s1, e1), (s2, e2) = services.pg.query("dagster_race", "SELECT start_time, end_time FROM runs")
        assert max(s1, s2) < min(e1, e2)
        client = MlflowClient(server.url)
        v = {week: client.get_model_version("flight_delay", challengers[week]["version"]) for week in WEEKS}
        promoted = [w for w in WEEKS if "promoted_at" in v[w].tags]
        assert promoted, "neither promoted"
        first = next(w for w in WEEKS if v[w].tags.get("previous_champion") == weak and "regated_against" not in v[w].tags)
        other = next(w for w in WEEKS if w != first)
        # the other found champion moved from the weak one to the first's version and gated again against it
        assert v[other].tags["regated_against"] == v[first].version, v[other].tags
        assert f"against v{v[first].version}" in v[other].tags["regate_decision"]
        final = client.get_model_version_by_alias("flight_delay", "champion").version
        print(f"week {first} won (v{v[first].version}); week {other} gated again: {v[other].tags['regate_decision']}; "
              f"champion v{final}")
        if "promoted_at" in v[other].tags:  # it passed against the new champion: it replaced it, knowingly
            assert v[other].tags["previous_champion"] == v[first].version and final == v[other].version
        else:  # it did not: the first stays
            assert final == v[first].version
    finally:
        server.stop()
