"""Micro-batching for an asyncio server (no Dagster): the requests waiting at one turn of the event
loop are scored in one model call (one row costs about what eight do: bench B6)."""

from __future__ import annotations

import asyncio


class MicroBatcher:
    """Scores the requests that wait at the same turn of the event loop in one model call."""

    def __init__(self, score, on_batch=None, max_rows: int = 4096):
        self.score = score
        self.on_batch = on_batch
        self.max_rows = max_rows
        self._pending: list = []
        self._scheduled = False

    async def __call__(self, rows):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((rows, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        import numpy as np

        from mlops_assets.lib.features import ScoringInput

        self._scheduled = False
        pending, self._pending = self._pending, []
        groups, group, n = [], [], 0
        for item in pending:
            k = len(item[0].nums)
            if group and n + k > self.max_rows:
                groups.append(group)
                group, n = [], 0
            group.append(item)
            n += k
        if group:
            groups.append(group)
        for group in groups:
            try:
                if len(group) == 1:
                    probs = [self.score(group[0][0])]
                else:
                    cats = [np.concatenate([g[0].cats[j] for g in group]) for j in range(len(group[0][0].cats))]
                    nums = np.vstack([g[0].nums for g in group])
                    p = self.score(ScoringInput(cats, nums))
                    probs = np.split(p, np.cumsum([len(g[0].nums) for g in group])[:-1])
                if self.on_batch:
                    self.on_batch(sum(len(q) for q in probs))
                for (_, fut), q in zip(group, probs):
                    if not fut.done():
                        fut.set_result(q)
            except Exception as exc:  # noqa: BLE001  (each waiting request gets the error)
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
