"""What each pytest-xdist worker did, in order, from a timeline written by tests/conftest.py:

    MLOPS_TEST_TIMELINE=/tmp/timeline.tsv make test
    python bench/test_timeline.py /tmp/timeline.tsv [--top 8]

Per worker: its busy seconds and when it finished, and its units of work (module or group, as
tests/conftest.work_unit names them) with their start offset and seconds. The worker that finishes
last carries the chain that sets the suite's wall time.
"""

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from tests.conftest import work_unit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("timeline")
    ap.add_argument("--top", type=int, default=8, help="units listed per worker (the longest)")
    args = ap.parse_args()
    rows = [line.split("\t") for line in Path(args.timeline).read_text().splitlines() if line.count("\t") == 3]
    t0 = min(float(r[0]) for r in rows)
    starts, units = {}, collections.defaultdict(dict)  # worker -> unit -> [first start, last end, busy]
    for ts, worker, event, nodeid in rows:
        ts = float(ts) - t0
        if event == "start":
            starts[(worker, nodeid)] = ts
            continue
        began = starts.pop((worker, nodeid), ts)
        u = units[worker].setdefault(work_unit(nodeid), [began, ts, 0.0])
        u[0], u[1], u[2] = min(u[0], began), max(u[1], ts), u[2] + ts - began
    for worker in sorted(units, key=lambda w: -max(u[1] for u in units[worker].values())):
        us = units[worker]
        print(f"{worker}: busy {sum(u[2] for u in us.values()):.0f} s, last test ended at "
              f"{max(u[1] for u in us.values()):.0f} s, {len(us)} units")
        for name, (first, _, busy) in sorted(us.items(), key=lambda kv: -kv[1][2])[:args.top]:
            print(f"    {busy:7.1f} s  from {first:6.0f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
