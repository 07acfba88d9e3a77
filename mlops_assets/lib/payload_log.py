"""The online payload log: what was asked and answered, recorded off the request path (no Dagster).

The scoring server hands each answered request to :meth:`PayloadLog.record` (a deque append: no
lock, no I/O, no conversion; sampled by ``MLOPS_PAYLOAD_SAMPLE``). A background thread turns what
has accumulated into one Parquet file every ``MLOPS_PAYLOAD_FLUSH_S`` seconds and writes it
atomically (``lib.storage``: a folder or an object store) under ``<log>/<UTC day>/``, one file per
batch, named by the server process and a sequence number, so that servers never write the same
key. :func:`read_day` gathers a day's files: the ``online_predictions`` asset's input.

What a record holds: ``request_id``, ``row`` (its position in the request), ``received_at`` (UTC),
``model_version``, the 24 feature columns and ``delay_probability``. When more than
``max_pending_rows`` wait (the store is down or slow), new records are dropped and counted, never
queued without bound: the server's memory stays flat and its answers are never delayed.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import random
import socket
import threading
import uuid

import numpy as np
import pandas as pd

from mlops_assets.lib.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    ScoringInput,
)

log = logging.getLogger(__name__)
COLUMNS = ["request_id", "row", "received_at", "model_version", *CATEGORICAL_FEATURES, *NUMERIC_FEATURES,
           "delay_probability"]


class PayloadLog:
    def __init__(self, root: str, *, version: str, sample: float = 1.0, flush_s: float = 10.0,
                 max_pending_rows: int = 1_000_000):
        from mlops_assets.lib.storage import Location

        self.location = Location(root)
        self.version = version
        self.sample = sample
        self.flush_s = flush_s
        self.max_pending_rows = max_pending_rows
        self._pending: collections.deque = collections.deque()
        self._pending_rows = 0  # approximate (read and written without a lock): a bound, not a count
        self._seq = itertools.count()
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rows_written = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    def record(self, request_id: str, received_at: float, rows: ScoringInput, probs: np.ndarray) -> bool:
        """Queue one answered request (sampled); False when it was not kept."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return False
        n = len(probs)
        if self._pending_rows + n > self.max_pending_rows:
            self.rows_dropped += n
            return False
        self._pending_rows += n
        self._pending.append((request_id, received_at, rows, probs))
        return True

    def _take(self) -> list:
        out = []
        while True:
            try:
                out.append(self._pending.popleft())
            except IndexError:
                return out

    def flush(self) -> int:
        """Write what is pending now (one file per UTC day it spans); rows written."""
        batch = self._take()
        if not batch:
            return 0
        n = sum(len(b[3]) for b in batch)
        self._pending_rows = max(0, self._pending_rows - n)
        frame = _frame(batch, self.version)
        written = 0
        for day, part in frame.groupby(frame["received_at"].dt.strftime("%Y-%m-%d"), sort=True):
            key = f"{day}/{self._writer}-{next(self._seq):06d}.parquet"
            try:
                self.location.write_parquet(key, part.reset_index(drop=True))
                written += len(part)
            except Exception:
                self.write_errors += 1
                self.rows_dropped += len(part)
                log.exception("payload log: could not write %s", self.location.describe(key))
        self.rows_written += written
        return written

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()


def _frame(batch: list, version: str) -> pd.DataFrame:
    cats = np.concatenate([np.column_stack(b[2].cats) for b in batch])
    nums = np.vstack([b[2].nums for b in batch])
    lens = [len(b[3]) for b in batch]
    df = pd.DataFrame(nums, columns=NUMERIC_FEATURES)
    for j, c in enumerate(CATEGORICAL_FEATURES):
        df.insert(j, c, cats[:, j].astype(str))
    df.insert(0, "model_version", version)
    df.insert(0, "received_at", pd.to_datetime(np.repeat([b[1] for b in batch], lens), unit="s", utc=True))
    df.insert(0, "row", np.concatenate([np.arange(k) for k in lens]).astype("int32"))
    df.insert(0, "request_id", np.repeat([b[0] for b in batch], lens))
    df["delay_probability"] = np.concatenate([b[3] for b in batch])
    return df[COLUMNS]


def read_day(root: str, day: str) -> tuple[pd.DataFrame, list[str]]:
    """Every record of ``day`` (UTC) under ``root``, each (request_id, row) once, in the order
    received; and the files read (for the input's fingerprint)."""
    from mlops_assets.lib.storage import Location

    loc = Location(root)
    keys = sorted(loc.list(day, ".parquet"))
    if not keys:
        return pd.DataFrame(columns=COLUMNS), []
    df = pd.concat([loc.read_parquet(k) for k in keys], ignore_index=True)
    df = df.sort_values(["received_at", "request_id", "row"], kind="stable")
    df = df.drop_duplicates(["request_id", "row"], keep="first").reset_index(drop=True)
    return df, keys

