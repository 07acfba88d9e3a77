"""A writer killed with SIGKILL in the middle of writing a partition: no partial file is ever
visible, and re-running gives byte-identical results."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.helpers import module_home

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

WRITER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from mlops_assets.lib.storage import Lake
    def frame(seed):  # ~60 MB of Parquet: a write takes long enough to be caught in the middle
        rng = np.random.default_rng(seed)
        return pd.DataFrame({f"c{i}": rng.random(800_000) for i in range(10)})
    lake, once = Lake(sys.argv[1]), sys.argv[2] == "once"
    frames = [frame(0), frame(1)]
    i = 0
    while True:
        lake.write("big", "2013-01-01", frames[i % 2])
        i += 1
        if once:
            break
""")


def _kill_when_writing(proc, folder: Path, timeout=120) -> bool:
    """SIGKILL ``proc`` as soon as a temporary file (a write in progress) shows in ``folder``;
    returns whether one was caught (else the process was killed at the timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if folder.exists() and any(n.endswith(".tmp") for n in os.listdir(folder)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return False


def _visible(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def test_sigkill_mid_write_leaves_old_or_new_never_partial(tmp_path):
    import numpy as np

    lake = tmp_path / "lake"
    code = ["-c", WRITER, str(lake)]
    expected = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        expected.append(pd.DataFrame({f"c{i}": rng.random(800_000) for i in range(10)}))
    caught = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, *code, "loop"], cwd=ROOT, start_new_session=True)
        caught += _kill_when_writing(proc, lake / "big")
        visible = _visible(lake / "big")
        assert visible in ([], ["2013-01-01.parquet"]), visible
        if visible:  # a complete previous version, never a partial one
            got = pd.read_parquet(lake / "big" / "2013-01-01.parquet")
            assert any(got.equals(e) for e in expected)
    assert caught >= 3, "the writer was not caught mid-write"
    left = [n for n in os.listdir(lake / "big") if n.endswith(".tmp")]
    assert left, "a killed writer leaves its hidden temporary behind"
    for n in left:  # ... which the next write sweeps once it is stale
        os.utime(lake / "big" / n, (time.time() - 3600, time.time() - 3600))
    subprocess.run([sys.executable, *code, "once"], cwd=ROOT, check=True)
    assert [n for n in os.listdir(lake / "big") if n.startswith(".")] == []
    # the re-run is byte-identical to an undisturbed write of the same frame
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-c", WRITER, str(ref), "once"], cwd=ROOT, check=True)
    assert (lake / "big" / "2013-01-01.parquet").read_bytes() == (ref / "big" / "2013-01-01.parquet").read_bytes()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    with module_home(tmp_path_factory, "kill", days=("2013-01-01", "2013-01-09")) as h:
        yield h


def test_sigkill_of_a_dagster_run_mid_backfill_then_rerun_is_identical(data):
    """`dagster asset materialize` of nine days of flight_features, killed with SIGKILL while it
    writes; every visible partition is whole, and the re-run's files equal the undisturbed ones."""
    home = data
    folder = home / "lake" / "flight_features"
    reference = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    assert len(reference) == 9
    for p in folder.glob("*.parquet"):
        p.unlink()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets.definitions", "--select", "flight_features",
           "--partition-range", "2013-01-01...2013-01-09"]
    for _ in range(3):  # a day's file takes milliseconds to write: try again if none was caught
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _kill_when_writing(proc, folder):
            break
        for p in folder.glob("*.parquet"):
            p.unlink()
    assert proc.returncode == -signal.SIGKILL  # killed while writing, not finished
    written = _visible(folder)
    assert len(written) < 9
    for name in written:  # whole files only: each equals the undisturbed version
        assert (folder / name).read_bytes() == reference[name], name
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in folder.glob("*.parquet")} == reference
