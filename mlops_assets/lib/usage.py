"""What a piece of work cost: wall time, CPU time, peak RSS and, on a GPU, the device and its
peak memory (no Dagster here).

    with measure() as usage:
        ...work...
    usage.metrics  # {"wall_seconds": ..., "cpu_seconds": ..., "peak_rss_mb": ..., ...}

Peak RSS comes from ``getrusage`` (the process's high-water mark: a step process's own peak when
steps run in their own processes, the whole process's peak so far when they run in-process).
GPU figures are read only when torch is already imported and CUDA is in use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time


@dataclasses.dataclass
class Usage:
    metrics: dict = dataclasses.field(default_factory=dict)
    device: str = "cpu"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def measure():
    usage = Usage()
    torch = sys.modules.get("torch")
    cuda = bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        yield usage
    finally:
        usage.metrics.update({
            "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": _cpu_seconds() - c0,
            "peak_rss_mb": peak_rss_mb(),
        })
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            usage.device = torch.cuda.get_device_name(0)
            usage.metrics["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
