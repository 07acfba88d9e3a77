"""The benchmarks stay working: each runs at a tiny size (the figures mean nothing here; see
bench/RESULTS.md for real ones)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_at_smoke_size():
    out = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--smoke"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| B")]
    assert [r.split("|")[1].strip() for r in rows] == ["B1", "B2", "B3a", "B3b", "B4", "B5", "B6", "B7", "B8", "B9"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")]
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0, r
