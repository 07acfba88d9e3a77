"""Small helpers the test folders share (written once)."""

import itertools
import os
import socket

# Ports for the servers the tests start. Probing the kernel for a free port (bind to port 0, close,
# hand the number to a server) races between parallel pytest workers: two can be told the same
# port before either server binds it. So each worker owns a block of ports of its own, below the
# kernel's ephemeral range (32768-60999 on Linux, where outgoing connections and bind(0) take
# theirs), and hands them out in turn: two workers can never be given the same port. A port some
# other program holds is skipped. SeaweedFS also binds port + 10000 for gRPC: that lands in
# 20000-29999, which no block and no ephemeral port uses either.
PORT_BASE, PORT_BLOCK, MAX_WORKERS = 10000, 1000, 10


def worker_index() -> int:
    """0 for a plain ``pytest`` run, N for pytest-xdist's worker ``gwN``."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) % MAX_WORKERS if name.startswith("gw") and name[2:].isdigit() else 0


_next = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        # as the servers bind (Go, PostgreSQL and uvicorn set SO_REUSEADDR): a port whose old
        # connections linger in TIME_WAIT after a stop is free to them
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(pair: bool = False) -> int:
    """A port of this worker's own block that nothing holds now (with ``pair``, its +10000
    neighbour is free too). Never the same port twice in one worker, until the block wraps."""
    base = PORT_BASE + worker_index() * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = base + next(_next) % PORT_BLOCK
        if _bindable(port) and (not pair or _bindable(port + 10000)):
            return port
    raise RuntimeError(f"no free port left in {base}..{base + PORT_BLOCK - 1}")


def range_tags(first: str, last: str) -> dict:
    """Run tags that make ``dg.materialize`` a single-run range backfill of ``first``..``last``
    (``build_asset_context(partition_key_range=...)`` fails for assets that read the time window)."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def copy_home(src, dst) -> None:
    """A copy of an ``MLOPS_HOME`` that a test may write to, leaving ``src`` (shared by other
    tests) as it was. MLflow stores absolute paths (each experiment's, run's, logged model's and
    model version's artifact location): they are rewritten to the copy's, or the copy would read
    and write the original's artifacts."""
    import shutil
    import sqlite3
    from pathlib import Path

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, symlinks=True)
    db = dst / "mlflow" / "mlflow.db"
    if not db.exists():
        return
    with sqlite3.connect(db) as con:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for col in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if "CHAR" in r[2].upper()
                        or "TEXT" in r[2].upper()]:
                con.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) WHERE instr("{col}", ?) > 0',
                            (str(src), str(dst), str(src)))
    con.close()
