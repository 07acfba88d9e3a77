"""The code location loads, by module and through workspace.yaml, fast and without heavy imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _readme_assets() -> dict[str, str]:
    """The asset graph table of the README: asset key -> group."""
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## The asset graph"):text.index("## Architecture")]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            for key in re.findall(r"`([a-z_/]+)`", cells[1]):
                out[key] = cells[0]
    return out


def test_definitions_load_with_the_documented_asset_keys():
    """Every asset the defs folder defines is in the README's asset graph table, in its group, and
    nothing the table names is missing: adding an asset is its module plus its row there."""
    from mlops_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    found = {k.to_user_string(): defs.resolve_assets_def(k).group_names_by_key[k] for k in graph.get_all_asset_keys()}
    documented = _readme_assets()
    assert len(documented) >= 17
    assert found == documented
    for job in ("ingestion_job", "daily_data_job", "training_job", "deployment_job", "scoring_job", "performance_job",
                "shadow_promotion_job"):
        assert defs.resolve_job_def(job) is not None


def test_the_defs_folder_is_what_dg_loads(tmp_path):
    """definitions.py loads the defs package by module (an installed package has no pyproject.toml);
    dg's own loader, which finds it through pyproject.toml, sees the same definitions, and
    `dg check defs` / `dg list defs` work on the project."""
    import dagster as dg

    from mlops_assets.definitions import defs

    def names(d):
        repo = d.get_repository_def()
        return ({k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()},
                {j.name for j in repo.get_all_jobs()}, {s.name for s in repo.sensor_defs},
                {s.name for s in repo.schedule_defs}, {str(k) for k in repo.asset_graph.asset_check_keys})

    folder = dg.Definitions.merge(dg.load_from_defs_folder(path_within_project=ROOT / "mlops_assets"),
                                  dg.Definitions(resources=defs.resources))
    assert names(folder) == names(defs)

    env = {**os.environ, "MLOPS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "VIRTUAL_ENV": str(Path(sys.prefix))}
    (tmp_path / "dagster").mkdir()
    out = subprocess.run([str(BIN / "dg"), "check", "defs"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=180)
    assert out.returncode == 0 and "All definitions loaded successfully" in out.stdout + out.stderr, out.stderr
    out = subprocess.run([str(BIN / "dg"), "list", "defs", "--json"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr
    listed = {a["asset_key"] for a in json.loads(out.stdout)["assets"]}
    assert listed == set(_readme_assets())


def test_gate_checks_are_blocking():
    from mlops_assets.definitions import defs

    specs = {s.name: s for s in defs.resolve_assets_def("challenger").check_specs}
    assert set(specs) == {"gate_quality_floor", "gate_beats_champion", "gate_calibration", "serving_infra_valid"}
    assert all(s.blocking for s in specs.values())
    for asset in ("raw_flights", "raw_weather", "flight_outcomes", "flight_features", "training_examples"):
        assert all(s.blocking for s in defs.resolve_assets_def(asset).check_specs), asset


def test_torch_trials_carry_gpu_tags_and_pool_and_others_do_not():
    from mlops_assets.definitions import defs

    job = defs.resolve_job_def("training_job")
    seen = 0
    for node in job.graph.iterate_op_defs():
        cfg = node.tags.get("dagster-k8s/config")
        assert cfg is not None, node.name
        cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
        res = cfg["container_config"]["resources"]
        gpu = "nvidia.com/gpu" in res.get("limits", {})
        assert gpu == (node.name == "train_torch_mlp_trial"), node.name
        if gpu:
            seen += 1
            assert node.pool == "gpu"
            assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
            tol = cfg["pod_spec_config"]["tolerations"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tol
        else:
            assert node.pool is None and "cpu" in res["requests"] and "memory" in res["limits"]
    assert seen == 1


def test_code_location_import_stays_light():
    code = ("import sys, mlops_assets.definitions; "
            "heavy = [m for m in ('torch', 'mlflow', 'sklearn', 'pandas', 'scipy') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"heavy modules imported at load time: {out.stdout}"


def test_cli_validates_module_and_workspace(tmp_path):
    env = {**os.environ, "MLOPS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    for args in (["-m", "mlops_assets.definitions"], ["-w", str(ROOT / "workspace.yaml")]):
        out = subprocess.run([str(BIN / "dagster"), "definitions", "validate", *args], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "passed validation" in (out.stdout + out.stderr)


@pytest.mark.parametrize("cpus, choice, expected", [
    (2, None, "in_process"), (4, None, "multiprocess"), (2, "multiprocess", "multiprocess"),
    (16, "in_process", "in_process"),
])
def test_local_executor_follows_the_cpus_unless_told(monkeypatch, cpus, choice, expected):
    from mlops_assets import settings as S
    from mlops_assets.definitions import build_executor

    monkeypatch.setattr(S.os, "cpu_count", lambda: cpus)
    if choice:
        monkeypatch.setenv("MLOPS_EXECUTOR", choice)
    else:
        monkeypatch.delenv("MLOPS_EXECUTOR", raising=False)
    S.get_settings.cache_clear()
    try:
        s = S.get_settings()
        assert s.executor == expected
        ex = build_executor(s)
        assert ex.name == expected
    finally:
        S.get_settings.cache_clear()


def test_unknown_executor_is_refused(monkeypatch):
    from mlops_assets import settings as S

    monkeypatch.setenv("MLOPS_EXECUTOR", "threads")
    S.get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="MLOPS_EXECUTOR='threads'"):
            S.get_settings()
    finally:
        S.get_settings.cache_clear()
