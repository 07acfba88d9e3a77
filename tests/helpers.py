"""Small helpers the test folders share (written once)."""

import socket


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def range_tags(first: str, last: str) -> dict:
    """Run tags that make ``dg.materialize`` a single-run range backfill of ``first``..``last``
    (``build_asset_context(partition_key_range=...)`` fails for assets that read the time window)."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
