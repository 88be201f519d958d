"""bench at ImageNet scale: how much the loader workers buy, end to end.

A folder of JPEGs laid out like ImageNet (train/ and val/ with class folders,
photo-sized images: 500x375 and 375x500, smooth content that compresses like
a photo) is made locally. Then, side by side in one run:

- the decode-only limit: the val split through bench's dataset and loader
  (decode, resize, centre crop, collate) and nothing else, with 0 and N workers;
- `tokzoo bench` end to end (the command a user types: start-up, the
  tokenizer, PSNR + SSIM, every output file) with ``--workers 0`` and ``N``,
  on a ready-made tokenizer at 256 px (the composed conv VQ with random
  weights, 16x16 tokens: its cost, not its quality, matters here; ``--width``
  sets its channels).

It prints images/s and the ratios (N workers / 0; bench / its decode-only
limit). ``--device cuda`` on a GPU machine (benchmarks/gpu.sh runs it).

    python benchmarks/loader.py [--images 512] [--workers 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOKENIZER = """model:
  name: composed
  resolution: {res}
  encoder: {{name: conv, ch: {ch}, ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 1, z_channels: 64}}
  quantizer: {{name: vq, codebook_size: 1024, dim: 8, beta: 0.25}}
  decoder: {{name: conv, ch: {ch}, ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 1, z_channels: 64}}
"""


def make_folder(root: Path, images: int, classes: int = 8, seed: int = 0) -> Path:
    """``root/train`` and ``root/val``, ``images`` JPEGs in each, ImageNet-sized (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for i in range(images):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = (375, 500) if i % 3 else (500, 375)
            low = rng.uniform(0, 255, (h // 25 + 1, w // 25 + 1, 3)).astype(np.uint8)  # smooth: a photo's spectrum
            img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
            noise = rng.normal(0, 6, (h, w, 3))
            img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
            img.save(folder / f"{split}_{i:06d}.JPEG", quality=90)
    return root


def decode_only(folder: Path, images: int, workers: int, res: int, batch: int) -> float:
    """Images/s of the val split through bench's dataset and loader alone."""
    import torch

    from tokzoo.data import build_dataset, collate

    ds = build_dataset({"name": "imagefolder", "path": str(folder), "resolution": res}, "val")
    sub = torch.utils.data.Subset(ds, range(min(images, len(ds))))
    loader = torch.utils.data.DataLoader(sub, batch_size=batch, collate_fn=collate, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    t = time.perf_counter()
    n = sum(len(b["image"]) for b in loader if "image" in b)
    return n / (time.perf_counter() - t)


def bench(folder: Path, images: int, workers: int, batch: int, device: str, tmp: Path, tokenizer: str) -> float:
    """Images/s of `tokzoo bench --tokenizers TOKENIZER` end to end (wall time of the command)."""
    out = tmp / f"bench-w{workers}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tokzoo.cli", "bench", "--tokenizers", tokenizer, "--data",
                    f"imagefolder:{folder}", "--num-images", str(images), "--batch-size", str(batch),
                    "--metrics", "psnr,ssim", "--workers", str(workers), "--device", device, "--out", str(out)],
                   check=True, capture_output=True, text=True)
    return images / (time.perf_counter() - t)


def compare(folder: Path, images: int, workers: int, res: int, batch: int, device: str, tmp: Path,
            tokenizer: str) -> dict[int, dict[str, float]]:
    """Decode-only and bench images/s with 0 and ``workers`` loader processes."""
    rows = {}
    for w in (0, workers):
        rows[w] = {"decode_only_img_s": decode_only(folder, images, w, res, batch),
                   "bench_img_s": bench(folder, images, w, batch, device, tmp, tokenizer)}
        print(f"workers {w}: decode-only {rows[w]['decode_only_img_s']:.1f} img/s, "
              f"tokzoo bench {rows[w]['bench_img_s']:.1f} img/s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=64,
                    help="the tokenizer's base channels (64: about a taming VQGAN's cost / 8; smaller on a CPU)")
    ap.add_argument("--out", default=None, help="write the measurements here as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        folder = make_folder(tmp / "imagenet-like", args.images)
        print(f"made {2 * args.images} JPEGs (500x375 / 375x500) in {time.perf_counter() - t:.0f} s", flush=True)
        preset = tmp / f"conv-vq-{args.resolution}.yaml"
        preset.write_text(TOKENIZER.format(res=args.resolution, ch=args.width))
        rows = compare(folder, args.images, args.workers, args.resolution, args.batch_size, args.device, tmp,
                       str(preset))
    n = args.workers
    print(f"\n{args.images} images at {args.resolution} px, batch {args.batch_size}, device {args.device}, "
          f"tokenizer width {args.width}, "
          "PSNR + SSIM, end to end (start-up and output files included)")
    print(f"{'':34s}{'0 workers':>12s}{f'{n} workers':>12s}{'ratio':>8s}")
    for key, label in (("decode_only_img_s", "decode only (limit), img/s"), ("bench_img_s", "tokzoo bench, img/s")):
        a, b = rows[0][key], rows[n][key]
        print(f"{label:34s}{a:12.1f}{b:12.1f}{b / a:7.2f}x")
    for w in (0, n):
        limit = rows[w]["bench_img_s"] / rows[w]["decode_only_img_s"]
        print(f"bench / its decode-only limit, {w} workers: {limit:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
