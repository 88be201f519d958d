"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path


def inception_weights(tmp: Path) -> Path:
    """The FID InceptionV3 weights file from the usual weight folders, or - when the
    real one is not on the machine - a locally made stand-in of the same network
    (same cost, meaningless absolute values) written under ``tmp``."""
    from tokzoo.errors import WeightsNotFoundError
    from tokzoo.weights import KNOWN_FILES, find_weights

    try:
        return find_weights(KNOWN_FILES["inception"], "rFID")
    except WeightsNotFoundError:
        from tokzoo.testing import make_inception_weights

        print("note: real FID weights not found; using a locally made stand-in of the same network")
        return make_inception_weights(Path(tmp) / "weights")


def run_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, in order."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def stage_rates(run_dir: Path, skip_fraction: float = 0.0) -> dict[str, float]:
    """Median training images/s per stage from a run's ``metrics.jsonl``.

    The first ``skip_fraction`` of each stage's logged rates (at least one
    record when there are more) is left out: warm-up, and compilation on GPU."""
    by_stage: dict[str, list[float]] = {}
    for rec in run_metrics(run_dir):
        if "images_per_s" in rec:
            by_stage.setdefault(rec["stage"], []).append(rec["images_per_s"])
    out = {}
    for stage, v in by_stage.items():
        skip = max(1, int(len(v) * skip_fraction)) if len(v) > 1 else 0
        out[stage] = statistics.median(v[skip:])
    return out


def tokzoo(*args: str, log: Path | None = None) -> float:
    """Run the `tokzoo` command a user would type; its wall time in seconds
    (its output appended to ``log`` when given, e.g. a job run beside another)."""
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    line = "$ tokzoo " + " ".join(args)
    if log is None:
        print(line, flush=True)
        subprocess.run([sys.executable, "-m", "tokzoo.cli", *args], check=True)
    else:
        with open(log, "a") as f:
            f.write(line + "\n")
            f.flush()
            subprocess.run([sys.executable, "-m", "tokzoo.cli", *args], check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def finish_results(out: Path, extra: dict, show: bool = True) -> dict:
    """Rename a bench's rows from run folders to preset names, add ``extra``,
    rewrite every output and print the Markdown table (unless ``show=False``)."""
    from tokzoo.bench.outputs import write_outputs

    res = json.loads((out / "results.json").read_text())
    res["tokenizers"] = {Path(k).name: v for k, v in res["tokenizers"].items()}
    for entry in res["tokenizers"].values():  # the rows are the presets: no temporary run folder recorded
        entry.pop("path", None)
    res.update(extra)
    write_outputs(out, res)  # the picture and the report follow the renamed rows
    if show:
        print((out / "results.md").read_text())
    return res
