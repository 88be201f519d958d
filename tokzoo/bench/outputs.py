"""Every file a results dict becomes, written from one place: results.json,
results.md, results.csv, the reconstruction grid (its stored rows and its
picture), tradeoff.png / sweep.png and report.html, each atomically."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tokzoo.bench.render import grid_png, is_continuous, render_csv, render_markdown, row_key
from tokzoo.bench.report import write_report
from tokzoo.ckptio import atomic_write
from tokzoo.bench.results import PICTURE_NAME, Results

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
        grid = out / "recon_grid.png"
        png = grid.read_bytes() if grid.is_file() else None
        pictures = {f.name[:-len(PICTURE_PNG)]: f.read_bytes() for f in sorted(out.glob("*" + PICTURE_PNG))
                    if f.name != "recon_grid.png"}
    else:
        png, pictures = _write_grid(out, results, grid_rows)
    written = write_report(out, results, png, baseline, atomic_write, pictures=pictures)
    return [out / "results.md", out / "results.csv", *written]


PICTURE_PNG = "_grid.png"  # a metric's picture P (Metric.images) is drawn as P_grid.png


def _write_grid(out: Path, results: Results, rows: dict[str, torch.Tensor]) -> tuple[bytes | None, dict[str, bytes]]:
    """Store the rows and draw the pictures: the reconstructions, and each
    metric picture (rows keyed ``<picture>:<row>``, see :meth:`Metric.images`),
    of every tokenizer in ``results`` that has one."""
    if rows:
        from safetensors.torch import save as save_bytes

        atomic_write(out / GRID_ROWS, save_bytes(rows))
    ordered = {"originals": rows["originals"]} if "originals" in rows else {}
    by_picture: dict[str, dict[str, torch.Tensor]] = {}
    names = {row_key(name): name for name in results["tokenizers"]}
    for name in results["tokenizers"]:
        if row_key(name) in rows:
            ordered[name] = rows[row_key(name)]
    for key, images in rows.items():
        picture, _, row = key.partition(":")
        if row.startswith("tok:") and row in names and PICTURE_NAME.fullmatch(picture):
            by_picture.setdefault(picture, {})[names[row]] = images
    continuous = [n for n, e in results["tokenizers"].items() if is_continuous(e)]
    png = grid_png(ordered, continuous=continuous) if len(ordered) > 1 else None
    if png:
        atomic_write(out / "recon_grid.png", png)
    pictures = {}
    for picture, drawn in by_picture.items():
        header = [f"class {c}" for c in range(max(len(v) for v in drawn.values()))] if picture == "samples" else None
        pictures[picture] = grid_png(drawn, header=header, continuous=continuous)
        atomic_write(out / f"{picture}{PICTURE_PNG}", pictures[picture])
    return png, pictures


def stored_rows(out: Path) -> dict[str, torch.Tensor]:
    """The grid rows kept in ``out`` by earlier benches (keys: :func:`row_key`)."""
    samples = Path(out) / GRID_ROWS
    if not samples.is_file():
        return {}
    try:
        from safetensors.torch import load_file

        rows = load_file(str(samples))
    except Exception:  # an unreadable cache only costs the old rows of the picture
        return {}
    return {k: v for k, v in rows.items() if _stored_row_ok(k, v)}


def _stored_row_ok(key: str, images: torch.Tensor) -> bool:
    """A row read back from a folder (made by another machine, or by hand): uint8 images
    [n,3,H,W] under ``originals``, ``tok:...`` or ``PICTURE:tok:...`` with PICTURE a
    picture name (never a path: it becomes a file name in --out)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        return False
    picture, _, row = key.partition(":")
    return key == "originals" or picture == "tok" or (row.startswith("tok:") and bool(PICTURE_NAME.fullmatch(picture)))
