"""Step pods sized to their work: every step carries its own memory request and limit (none falls
back to the executor's 512Mi/1Gi default), and each limit exceeds the step's peak measured at its
largest realistic input (bench/step_memory.py: a year as one single-run backfill, a 52-week
training set) by at least MARGIN."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 1.25  # the limit is at least 25% above the measured peak
MEASURED = ROOT / "bench" / "step_memory.json"


def _memory(tags) -> tuple[float, float]:
    from kubernetes.utils.quantity import parse_quantity

    from mlops_assets.defs.k8s import K8S_CONFIG_TAG

    cfg = tags.get(K8S_CONFIG_TAG)
    cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
    assert cfg, "no dagster-k8s/config of its own: it would get the executor's default"
    res = cfg["container_config"]["resources"]
    return (float(parse_quantity(res["requests"]["memory"])) / 2**20,
            float(parse_quantity(res["limits"]["memory"])) / 2**20)


def _every_op():
    from mlops_assets.definitions import defs

    ops = {}
    for job in defs.resolve_all_job_defs():
        for node in job.graph.iterate_op_defs():
            ops[node.name] = node.tags
    return ops


def test_the_committed_measurement_is_the_full_size_one():
    m = json.loads(MEASURED.read_text())
    assert m["short"] is False and m["training_weeks"] == 52 and m["last_day"] >= "2013-12-30"


def test_every_step_limit_exceeds_its_measured_peak_with_margin():
    measured = json.loads(MEASURED.read_text())["steps"]
    ops = _every_op()
    assert len(ops) >= 20
    for name, tags in sorted(ops.items()):
        request, limit = _memory(tags)
        assert request == limit, f"{name}: memory request {request} MiB != limit {limit} MiB (no overcommit)"
        assert name in measured, f"{name}: no measured peak in {MEASURED.name}; run bench/step_memory.py"
        peak = measured[name]["peak_mb"]
        assert limit >= peak * MARGIN, f"{name}: limit {limit:.0f} MiB < measured peak {peak:.0f} MiB x {MARGIN}"


def test_a_short_measurement_stays_below_the_committed_full_one(tmp_path):
    """CI's short version of the measurement (two weeks): it runs, and what it measures stays within
    the margin the sizes keep above the committed full-size figures (a group whose input does not
    grow with the span, platform_health, measures the same either way, give or take its noise)."""
    out = tmp_path / "short.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "step_memory.py"), "--short", "--out", str(out),
                        "--home", str(tmp_path / "home")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    short, full = json.loads(out.read_text())["groups"], json.loads(MEASURED.read_text())["groups"]
    for group, g in short.items():
        assert 100 < g["peak_mb"] <= full[group]["peak_mb"] * MARGIN, (group, g, full[group])


@pytest.mark.parametrize("name", ["raw_flights", "flight_features", "training_examples", "platform_health"])
def test_the_steps_that_had_no_size_have_one(name):
    _memory(_every_op()[name])
