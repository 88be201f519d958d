"""How many loader processes decode the next batches (bench and the trainer): one rule."""
from __future__ import annotations

import os


def default_workers(device: str = "cuda") -> int:
    """``auto`` workers: on an accelerator, one loader process per core but one
    (the main process feeds the model and runs the metrics), at most 8; on the
    CPU none (the model and the metrics use every core already: a worker only
    takes cores from them, measured 0.91x with one on 2 cores, benchmarks/loader.py)."""
    if str(device).split(":")[0] == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def resolve_workers(value: int | str, device: str) -> int:
    """A ``workers`` / ``num_workers`` setting (``auto`` or a count) for a model on ``device``."""
    return default_workers(device) if value == "auto" else int(value)
