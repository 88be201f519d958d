"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path


def stage_rates(run_dir: Path, skip_fraction: float = 0.0) -> dict[str, float]:
    """Median training images/s per stage from a run's ``metrics.jsonl``.

    The first ``skip_fraction`` of each stage's logged rates (at least one
    record when there are more) is left out: warm-up, and compilation on GPU."""
    by_stage: dict[str, list[float]] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "images_per_s" in rec:
            by_stage.setdefault(rec["stage"], []).append(rec["images_per_s"])
    out = {}
    for stage, v in by_stage.items():
        skip = max(1, int(len(v) * skip_fraction)) if len(v) > 1 else 0
        out[stage] = statistics.median(v[skip:])
    return out
