"""What each pytest-xdist worker did, in order, from a timeline written by tests/conftest.py:

    MLOPS_TEST_TIMELINE=/tmp/timeline.tsv make test
    python bench/test_timeline.py /tmp/timeline.tsv [--top 8]

Per worker: its busy seconds and when it finished, and its units of work (module or group, as
tests/conftest.work_unit names them) with their start offset and seconds. The worker that finishes
last carries the chain that sets the suite's wall time. CPU seconds are the worker's own and those
of the processes it started and reaped (a daemon's run workers, orphaned when it is killed, are
not counted): on 2 cores the suite is CPU-bound, so that is what to cut.
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
    ap.add_argument("--by-cpu", action="store_true", help="then every unit of every worker, most CPU first")
    args = ap.parse_args()
    rows = [line.split("\t") for line in Path(args.timeline).read_text().splitlines() if line.count("\t") in (3, 4)]
    t0 = min(float(r[0]) for r in rows)
    starts, units = {}, collections.defaultdict(dict)  # worker -> unit -> [first start, last end, busy]
    for ts, worker, event, nodeid, *cpu in rows:
        ts, cpu = float(ts) - t0, float(cpu[0]) if cpu else 0.0
        if event == "start":
            starts[(worker, nodeid)] = (ts, cpu)
            continue
        began, cpu0 = starts.pop((worker, nodeid), (ts, cpu))
        u = units[worker].setdefault(work_unit(nodeid), [began, ts, 0.0, 0.0])
        u[0], u[1], u[2], u[3] = min(u[0], began), max(u[1], ts), u[2] + ts - began, u[3] + cpu - cpu0
    for worker in sorted(units, key=lambda w: -max(u[1] for u in units[worker].values())):
        us = units[worker]
        print(f"{worker}: busy {sum(u[2] for u in us.values()):.0f} s, last test ended at "
              f"{max(u[1] for u in us.values()):.0f} s, {len(us)} units, "
              f"{sum(u[3] for u in us.values()):.0f} CPU s")
        for name, (first, _, busy, cpu) in sorted(us.items(), key=lambda kv: -kv[1][2])[:args.top]:
            print(f"    {busy:7.1f} s  {cpu:7.1f} CPU s  from {first:6.0f} s  {name}")
    if args.by_cpu:
        every = sorted(((u[3], u[2], name) for us in units.values() for name, u in us.items()), reverse=True)
        print(f"every unit, most CPU first (the worker's own and its reaped children's; {sum(c for c, _, _ in every):.0f} in all):")
        for cpu, busy, name in every:
            print(f"    {cpu:7.1f} CPU s  {busy:7.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
