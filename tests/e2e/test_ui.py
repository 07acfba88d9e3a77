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

        # 3. Materialise a partition of an ingestion asset from the UI; it succeeds.
        goto("/assets/raw_weather")
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize raw_weather")
        box = dialog.get_by_placeholder("ex: 2013-01-01", exact=False)
        box.fill("2013-01-21")
        box.press("Enter")
        dialog.get_by_text("1 partition", exact=True).wait_for()
        page.screenshot(path=str(ARTIFACTS / "3-materialize-dialog.png"))
        dialog.get_by_role("button", name="Launch 1 run").click()

        def materialised():
            with instance(world) as inst:
                return "2013-01-21" in inst.get_materialized_partitions(dg.AssetKey("raw_weather"))

        wait_for(materialised, 180, what="raw_weather 2013-01-21 materialised from the UI")
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

    with instance(world) as inst:
        runs = [r for r in inst.get_runs() if r.tags.get("dagster/partition") == "2013-01-21"]
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert all((ARTIFACTS / n).stat().st_size > 10_000 for n in
               ("1-asset-graph.png", "2-flight-features-partitions.png", "5-challenger-checks.png"))
