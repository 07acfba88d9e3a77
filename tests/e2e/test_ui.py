"""The Dagster UI in a real browser: Playwright driving Debian's Chromium against `dagster dev`.
Screenshots go to test-artifacts/ui/ (ignored by git)."""

import os
import shutil

import dagster as dg
import pytest

from tests.e2e.harness import ROOT, dagster_dev, instance, wait_for

CHROMIUM = os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "ui"
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture
def world(home):
    """Real data for a short window and one trained week, materialised into the instance the UI reads."""
    from mlops_assets.defs.deployment import assets as D
    from mlops_assets.defs.evaluation import assets as E
    from mlops_assets.defs.features import assets as F
    from mlops_assets.defs.ingestion import assets as I
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.defs.training import assets as T
    from mlops_assets.lib.source import replay
    from mlops_assets.settings import get_settings

    s = get_settings()
    replay(s.landing_uri, "2013-01-22", "2013-01-01")
    res = build_resources(s)
    with instance(home) as inst:
        assert dg.materialize([I.raw_flights, I.raw_weather, I.flight_outcomes, F.flight_features, F.training_examples],
                              resources=res, instance=inst,
                              tags={"dagster/asset_partition_range_start": "2013-01-01",
                                    "dagster/asset_partition_range_end": "2013-01-20"}).success
        assert dg.materialize([T.training_set, *T.candidate_models, E.challenger, D.champion], resources=res,
                              instance=inst, partition_key="2013-01-14").success
    return home


def test_ui_shows_the_graph_partitions_checks_and_materialises_a_partition(world):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dagster_dev(world) as dev, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        # The first-visit "Join the Dagster community" dialog opens a second after a page loads,
        # over whatever is on screen; its Skip button records on the server that it was seen.
        # Record that up front (the same mutation), so it never opens during the test.
        assert dev.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True

        def goto(path):
            page.goto(dev.url + path)
            page.wait_for_load_state("networkidle")

        # 1. The asset graph shows every group.
        goto("/asset-groups")
        for group in ("ingestion", "features", "training", "evaluation", "deployment", "monitoring"):
            page.get_by_text(group, exact=True).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "1-asset-graph.png"))

        # 2. The partitions of flight_features: 365 days, 20 materialised.
        goto("/assets/flight_features?view=partitions")
        page.get_by_text("365 Partitions Selected").wait_for()
        page.get_by_text("Materialized (20)").wait_for()
        page.get_by_text("Missing (345)").wait_for()
        page.screenshot(path=str(ARTIFACTS / "2-flight-features-partitions.png"))

        # 3. From the UI: materialise one partition of an ingestion asset (a run), then a range of
        #    two days of another (a backfill, run as one single run by its backfill policy).
        def launch(asset, selection, partitions_text, button):
            goto(f"/assets/{asset}")
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {asset}")
            box = dialog.get_by_placeholder("ex: 2013-01-01", exact=False)
            box.fill(selection)
            box.press("Enter")
            dialog.get_by_text(partitions_text, exact=True).wait_for()
            page.screenshot(path=str(ARTIFACTS / f"3-materialize-{asset}.png"))
            dialog.get_by_role("button", name=button).click()

        def materialised(asset, days):
            with instance(world) as inst:
                return set(days) <= set(inst.get_materialized_partitions(dg.AssetKey(asset)))

        launch("raw_weather", "2013-01-21", "1 partition", "Launch 1 run")
        wait_for(lambda: materialised("raw_weather", ["2013-01-21"]), 180, what="raw_weather 2013-01-21 from the UI")
        launch("raw_flights", "[2013-01-21...2013-01-22]", "2 partitions", "Launch backfill")
        wait_for(lambda: materialised("raw_flights", ["2013-01-21", "2013-01-22"]), 240,
                 what="the UI backfill of raw_flights 2013-01-21..22")
        goto("/assets/raw_weather?view=partitions")
        page.get_by_text("Materialized (21)").wait_for()
        page.screenshot(path=str(ARTIFACTS / "4-raw-weather-after.png"))

        # 4. The gate's check results on challenger.
        goto("/assets/challenger?view=checks")
        page.get_by_text("gate_quality_floor").first.wait_for()
        page.get_by_text("gate_beats_champion").first.wait_for()
        page.get_by_text("This is a blocking asset check.").wait_for()
        assert page.get_by_text("Succeeded").count() >= 2
        page.screenshot(path=str(ARTIFACTS / "5-challenger-checks.png"))
        browser.close()

        def ui_runs_finished():  # a partition shows as materialised before its run has ended
            with instance(world) as inst:
                runs = [r for r in inst.get_runs() if r.tags.get("dagster/partition") == "2013-01-21"
                        or r.tags.get("dagster/backfill")]
            return len(runs) >= 2 and all(r.is_finished for r in runs)

        wait_for(ui_runs_finished, 120, what="the UI's runs to finish")

    with instance(world) as inst:
        single = [r for r in inst.get_runs() if r.tags.get("dagster/partition") == "2013-01-21"]
        backfill = [r for r in inst.get_runs() if r.tags.get("dagster/backfill")]
    assert len(single) == 1 and single[0].status == dg.DagsterRunStatus.SUCCESS
    assert len(backfill) == 1 and backfill[0].status == dg.DagsterRunStatus.SUCCESS  # one run for the range
    assert backfill[0].tags.get("dagster/asset_partition_range_start") == "2013-01-21"
    assert all((ARTIFACTS / n).stat().st_size > 10_000 for n in
               ("1-asset-graph.png", "2-flight-features-partitions.png", "5-challenger-checks.png"))
