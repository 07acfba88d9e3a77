"""The benchmarks stay working: each runs at a tiny size (the figures mean nothing here; see
bench/RESULTS.md for real ones). One test per benchmark (B5 and B6 together: they share the
champion home the run trains once; B2 and B8 together: they share the prepared lake and the
training_job runs), so that parallel workers take them side by side; the first
test holds the list to all ten."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALL = ["B1", "B2", "B3a", "B3b", "B4", "B5", "B6", "B7", "B8", "B9"]
RUNS = ["B1", "B2,B8", "B3a,B3b", "B4", "B5,B6", "B7", "B9"]


def test_every_benchmark_has_a_smoke_run():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.pop(0)
    assert list(run.BENCHES) == ALL
    assert sorted(b for r in RUNS for b in r.split(",")) == sorted(ALL)


@pytest.mark.parametrize("only", RUNS)
def test_the_benchmark_runs_at_smoke_size(only):
    out = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--smoke", "--only", only], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| B")]
    assert [r.split("|")[1].strip() for r in rows] == only.split(",")
    for r in rows:
        cells = [c.strip() for c in r.split("|")]
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0, r
