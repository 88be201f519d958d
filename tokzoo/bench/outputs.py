"""Every file a results dict becomes, written from one place: results.json,
results.md, results.csv, the reconstruction grid (its stored rows and its
picture), tradeoff.png / sweep.png and report.html, each atomically."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tokzoo.bench.render import grid_png, render_csv, render_markdown, row_key
from tokzoo.bench.report import write_report
from tokzoo.ckptio import atomic_write
from tokzoo.bench.results import Results

GRID_ROWS = "grid_samples.safetensors"  # every tokenizer's grid row (uint8), kept across benches into one folder


def write_outputs(out: Path, results: Results, baseline: str | None = None,
                  grid_rows: dict[str, torch.Tensor] | None = None, results_json: bool = True) -> list[Path]:
    """Write ``results`` into ``out``; returns the files written after the
    results.json. ``grid_rows`` (keys: :func:`row_key`) are stored and drawn
    as recon_grid.png; without them the recon_grid.png already in ``out`` is
    what report.html shows. ``results_json=False`` leaves results.json as it is
    (``tokzoo report`` re-renders a file it did not write)."""
    out = Path(out)
    if results_json:
        atomic_write(out / "results.json", json.dumps(results, indent=2))
    atomic_write(out / "results.md", render_markdown(results))
    atomic_write(out / "results.csv", render_csv(results))
    if grid_rows is None:
        grid, samples = out / "recon_grid.png", out / SAMPLES_PNG
        png = grid.read_bytes() if grid.is_file() else None
        samples_png = samples.read_bytes() if samples.is_file() else None
    else:
        png, samples_png = _write_grid(out, results, grid_rows)
    written = write_report(out, results, png, baseline, atomic_write, samples_png=samples_png)
    return [out / "results.md", out / "results.csv", *written]


SAMPLES_PNG = "samples_grid.png"


def _write_grid(out: Path, results: Results, rows: dict[str, torch.Tensor]) -> tuple[bytes | None, bytes | None]:
    """Store the rows and draw the pictures (reconstructions; a metric's samples,
    rows keyed ``samples:<row>``) of every tokenizer in ``results`` that has one."""
    if rows:
        from safetensors.torch import save as save_bytes

        atomic_write(out / GRID_ROWS, save_bytes(rows))
    ordered = {"originals": rows["originals"]} if "originals" in rows else {}
    samples = {}
    for name in results["tokenizers"]:
        if row_key(name) in rows:
            ordered[name] = rows[row_key(name)]
        if f"samples:{row_key(name)}" in rows:
            samples[name] = rows[f"samples:{row_key(name)}"]
    png = grid_png(ordered) if len(ordered) > 1 else None
    if png:
        atomic_write(out / "recon_grid.png", png)
    samples_png = grid_png(samples, header=[f"class {c}" for c in range(max(len(v) for v in samples.values()))]) \
        if samples else None
    if samples_png:
        atomic_write(out / SAMPLES_PNG, samples_png)
    return png, samples_png


def stored_rows(out: Path) -> dict[str, torch.Tensor]:
    """The grid rows kept in ``out`` by earlier benches (keys: :func:`row_key`)."""
    samples = Path(out) / GRID_ROWS
    if not samples.is_file():
        return {}
    try:
        from safetensors.torch import load_file

        return load_file(str(samples))
    except Exception:  # an unreadable cache only costs the old rows of the picture
        return {}
