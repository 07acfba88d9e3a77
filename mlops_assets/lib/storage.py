"""Atomic reads and writes of tables in a folder or object store (no Dagster here).

A location is a local path or any fsspec URI (``s3://bucket/lake``).  Local writes go to a
temporary file in the same folder and are renamed into place (``os.replace`` is atomic on POSIX),
so a reader sees the previous good version or the new one, never a partial file.  Object stores
commit a PUT whole, which gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from mlops_assets.settings import is_uri


STALE_TMP_S = 600


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def digest(*parts: object) -> str:
    """A short, stable identity of a list of input identities (file hashes, model versions, code
    version): what a materialisation records as its ``input_fingerprint``."""
    import hashlib

    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _sweep_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` left by a writer killed mid-write (SIGKILL, OOM): hidden,
    never read, but they would pile up. A live writer's temporary is seconds old."""
    now = time.time()
    for p in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_TMP_S:
                p.unlink()


class StoreError(OSError):
    """A read or write of the object store failed; the message names the store and the key."""


class Location:
    """A root folder (local path or URI) holding files addressed by relative keys."""

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)
        self.remote = is_uri(self.root)
        if self.root.startswith("file://"):
            self.root = self.root[len("file://"):]

    def __repr__(self) -> str:
        return f"Location({self.root!r})"

    # --- paths -------------------------------------------------------------------------------
    def path(self, key: str):
        if self.remote:
            from upath import UPath

            # No listings cache: fsspec keeps a directory's listing for the life of the process, so a
            # long-lived code server (the landing sensor) would never see files landed after its
            # first look, nor `exists` a partition written by another process (found by
            # tests/topology: the sensor on S3 saw none of the new days).
            return UPath(self.root, use_listings_cache=False) / key
        return Path(self.root) / key

    def describe(self, key: str) -> str:
        return str(self.path(key))

    def store(self) -> str:
        """The object store behind a remote location, as an operator would look for it."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f"{self.root.split('/', 3)[2] if '://' in self.root else self.root} bucket at " \
               f"{endpoint or 'the provider default endpoint'}"

    @contextlib.contextmanager
    def _remote_errors(self, what: str, key: str):
        try:
            yield
        except FileNotFoundError:
            raise
        except Exception as exc:  # botocore/aiohttp errors: connection refused, timeouts, 5xx
            raise StoreError(f"{what} {self.describe(key)} (key {key!r}) in the object store {self.store()} failed: "
                             f"{type(exc).__name__}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys directly under ``prefix`` ending in ``suffix``, sorted."""
        folder = self.path(prefix)
        if not folder.exists():
            return []
        return sorted(
            f"{prefix}/{p.name}" for p in folder.iterdir()
            if p.name.endswith(suffix) and not p.name.startswith(".")
        )

    def fingerprints(self, prefix: str, suffix: str, previous: dict) -> dict[str, dict]:
        """{key: {stamp, size, sha256}} of the files directly under ``prefix`` ending in ``suffix``,
        from one listing (a local ``scandir``; one LIST of the object store, not a HEAD per
        object); a file whose stamp and size match ``previous[key]`` keeps its sha256 unread."""
        import hashlib

        out: dict[str, dict] = {}
        if self.remote:
            folder = self.path(prefix)
            if not folder.exists():
                return out
            for info in folder.fs.ls(folder.path, detail=True):
                name = info["name"].rstrip("/").rsplit("/", 1)[-1]
                if info.get("type") == "directory" or not name.endswith(suffix) or name.startswith("."):
                    continue
                stamp = str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created"))
                out[f"{prefix}/{name}"] = {"stamp": stamp, "size": int(info.get("size") or 0)}
        else:
            try:
                entries = list(os.scandir(os.path.join(self.root, prefix)))
            except FileNotFoundError:
                return out
            for e in entries:
                if e.name.endswith(suffix) and not e.name.startswith(".") and e.is_file():
                    st = e.stat()
                    out[f"{prefix}/{e.name}"] = {"stamp": str(st.st_mtime_ns), "size": st.st_size}
        for key, fp in out.items():
            prev = previous.get(key)
            if prev and prev.get("stamp") == fp["stamp"] and prev.get("size") == fp["size"]:
                fp["sha256"] = prev["sha256"]
            else:
                fp["sha256"] = hashlib.sha256(self.read_bytes(key)).hexdigest()
        return dict(sorted(out.items()))

    # --- bytes -------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        if self.remote:
            with self._remote_errors("reading", key):
                return self.path(key).read_bytes()
        return self.path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> bool:
        """Write atomically; returns False (and writes nothing) when the content is unchanged."""
        target = self.path(key)
        if self.remote:
            # One PUT (or a multipart upload completed at the end): a reader sees the previous
            # object or the new one, never part of it, also when the store goes away mid-write.
            with self._remote_errors("writing", key):
                if target.exists() and target.stat().st_size == len(data) and target.read_bytes() == data:
                    return False
                target.write_bytes(data)
            return True
        # Compare contents only when the sizes match: one stat per write in the common case.
        if target.exists() and target.stat().st_size == len(data) and target.read_bytes() == data:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_temporaries(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def delete(self, key: str) -> None:
        p = self.path(key)
        if p.exists():
            p.unlink()

    # --- tables ------------------------------------------------------------------------------
    def write_parquet(self, key: str, df: pd.DataFrame) -> bool:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.write_bytes(key, buf.getvalue())

    def read_parquet(self, key: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(key)), columns=list(columns) if columns else None)

    def read_parquet_fp(self, key: str, columns: Iterable[str] | None = None) -> tuple[pd.DataFrame, str]:
        """The table and the sha256 of the bytes it was read from (its identity)."""
        data = self.read_bytes(key)
        return pd.read_parquet(io.BytesIO(data), columns=list(columns) if columns else None), sha256(data)


class Lake(Location):
    """The lake: one Parquet file per asset partition, ``<asset>/<partition>.parquet``."""

    @staticmethod
    def key(asset: str, partition: str) -> str:
        return f"{asset}/{partition}.parquet"

    def write(self, asset: str, partition: str, df: pd.DataFrame) -> str:
        key = self.key(asset, partition)
        self.write_parquet(key, df)
        return self.describe(key)

    def read(self, asset: str, partition: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        return self.read_fp(asset, partition, columns)[0]

    def read_fp(self, asset: str, partition: str, columns: Iterable[str] | None = None) -> tuple[pd.DataFrame, str]:
        """The partition's table and the sha256 of its bytes: what a downstream materialisation
        records as the identity of this input."""
        key = self.key(asset, partition)
        if not self.exists(key):
            raise FileNotFoundError(
                f"lake has no partition {partition} of {asset} ({self.describe(key)}): "
                "materialise it first"
            )
        return self.read_parquet_fp(key, columns)

    def has(self, asset: str, partition: str) -> bool:
        return self.exists(self.key(asset, partition))

    def read_many(self, asset: str, partitions: Iterable[str], *, missing_ok: bool = False) -> pd.DataFrame:
        return self.read_many_fp(asset, partitions, missing_ok=missing_ok)[0]

    def read_many_fp(self, asset: str, partitions: Iterable[str], *,
                     missing_ok: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
        """The partitions' tables concatenated, and the sha256 of each partition read."""
        frames, shas = [], {}
        for p in partitions:
            if missing_ok and not self.has(asset, p):
                continue
            df, shas[p] = self.read_fp(asset, p)
            frames.append(df)
        if not frames:
            return pd.DataFrame(), shas
        return pd.concat(frames, ignore_index=True), shas

    def partitions(self, asset: str) -> list[str]:
        return [k.split("/")[-1][: -len(".parquet")] for k in self.list(asset, ".parquet")]
