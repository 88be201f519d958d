"""Harness speed side by side: `tokzoo bench` (streaming) vs the PNG-dump pipeline.

Same tokenizer, same images, same metrics (PSNR, SSIM, rFID), one run:

1. streaming: the tokzoo harness (`tokzoo.bench.harness.Bench`);
2. PNG dump, the way tokenizer repos evaluate today: write originals and
   reconstructions as PNG files, then score the two folders with torchmetrics
   (PSNR, SSIM) and torch-fidelity (FID);
3. bare loop: the tokenizer's forward passes plus the same metric updates,
   with no harness around them, to measure the harness's overhead.

The streaming harness is timed twice: on a first run (nothing cached) and on a
second run over the same images, where the originals' Inception statistics
come from tokzoo's cache (keyed by dataset fingerprint and protocol) - the
usual case when several tokenizers are benched on one dataset.

rFID uses an InceptionV3 weights file with the real layout; when the real
FID weights are not on the machine a locally made stand-in is used (same
network and cost, different numbers). Usage:

    python benchmarks/harness.py [--images 512] [--tokenizer RUN_DIR] [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from tokzoo.bench.harness import Bench, BenchOptions
from tokzoo.api import BenchContext
from tokzoo.bench.metrics import PSNR, RFID, SSIM
from tokzoo.data import build_dataset, collate
from tokzoo.data.preprocess import to_uint8
from tokzoo.weights import KNOWN_FILES

from _common import inception_weights


def tokenizer_path(arg: str | None, tmp: Path) -> str:
    if arg:
        return arg
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    cfg = load_run_config("vqgan-tiny", ["recipe.steps=1", "data.train_size=16", "data.val_size=16",
                                         "trainer.eval_images=16", f"run_dir={tmp / 'tok'}"])
    Trainer(cfg).train()
    return str(tmp / "tok")


def streaming(tok: str, n: int, bs: int, wdir: str, out: Path, device: str) -> float:
    t = time.perf_counter()
    Bench(BenchOptions([tok], metrics=["psnr", "ssim", "rfid"], num_images=n, batch_size=bs, out_dir=str(out),
                       weights_dir=wdir, device=device)).run()
    return time.perf_counter() - t


def bare_loop(tok, ds, n: int, bs: int, wdir: str, device: str) -> float:
    t = time.perf_counter()
    metrics = [PSNR(), SSIM(), RFID()]
    for m in metrics:
        m.setup(BenchContext(device=device, weights_dir=wdir))
        m.reset(tok)
    with torch.no_grad():
        for s in range(0, n, bs):
            x = collate([ds[i] for i in range(s, min(n, s + bs))])["image"].to(device)
            o8, r8 = to_uint8(x), to_uint8(tok.decode(tok.encode(x)))
            for m in metrics:
                m.update(o8, r8)
    for m in metrics:
        m.compute()
    return time.perf_counter() - t


def png_dump(tok, ds, n: int, bs: int, wdir: str, tmp: Path, device: str) -> float:
    import torch_fidelity
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    t = time.perf_counter()
    a, b = tmp / "orig", tmp / "recon"
    a.mkdir()
    b.mkdir()
    with torch.no_grad():
        for s in range(0, n, bs):
            x = collate([ds[i] for i in range(s, min(n, s + bs))])["image"].to(device)
            o8, r8 = to_uint8(x).cpu(), to_uint8(tok.decode(tok.encode(x))).cpu()
            for k in range(len(x)):
                Image.fromarray(o8[k].permute(1, 2, 0).numpy()).save(a / f"{s + k:06d}.png")
                Image.fromarray(r8[k].permute(1, 2, 0).numpy()).save(b / f"{s + k:06d}.png")
    psnr, ssim = PeakSignalNoiseRatio(data_range=255.0), StructuralSimilarityIndexMeasure(data_range=255.0)
    files = sorted(os.listdir(a))
    for s in range(0, len(files), bs):
        load = lambda d: torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(d / f))).permute(2, 0, 1)  # noqa: E731
                                      for f in files[s:s + bs]]).float()
        oa, rb = load(a), load(b)
        psnr.update(rb, oa)
        ssim.update(rb, oa)
    psnr.compute(), ssim.compute()
    torch_fidelity.calculate_metrics(input1=str(b), input2=str(a), fid=True, cuda=device == "cuda", verbose=False,
                                     cache=False, batch_size=bs,
                                     feature_extractor_weights_path=str(Path(wdir) / KNOWN_FILES["inception"]))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tokenizer", default=None, help="a run folder or checkpoint (default: a freshly built vqgan-tiny)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from tokzoo.train.checkpoint import load_tokenizer

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wdir = str(inception_weights(tmp).parent)
        path = tokenizer_path(args.tokenizer, tmp)
        tok = load_tokenizer(path, map_location=args.device)
        ds = build_dataset({"name": "shapes", "resolution": tok.info.resolution}, "val")
        n = min(args.images, len(ds))
        os.environ["TOKZOO_CACHE_DIR"] = str(tmp / "cache")  # no cached reference statistics: equal work
        bare_loop(tok, ds, min(n, args.batch_size), args.batch_size, wdir, args.device)  # warm-up
        t_bare = bare_loop(tok, ds, n, args.batch_size, wdir, args.device)
        t_stream = streaming(path, n, args.batch_size, wdir, tmp / "bench", args.device)
        # a second bench of the same images (another tokenizer, or a re-run): the reference
        # statistics now come from the cache keyed by dataset fingerprint + protocol
        t_warm = streaming(path, n, args.batch_size, wdir, tmp / "bench-warm", args.device)
        t_png = png_dump(tok, ds, n, args.batch_size, wdir, tmp, args.device)
    print(f"\n{n} images at {tok.info.resolution}px, PSNR + SSIM + rFID, device {args.device}")
    print(f"  bare loop (forward + metric updates): {t_bare:8.2f} s")
    print(f"  tokzoo bench (streaming harness):     {t_stream:8.2f} s")
    print(f"  tokzoo bench, reference stats cached: {t_warm:8.2f} s")
    print(f"  PNG dump + torchmetrics + fidelity:   {t_png:8.2f} s")
    print(f"ratios: PNG pipeline / tokzoo bench = {t_png / t_stream:.2f}x first run, {t_png / t_warm:.2f}x with the "
          f"reference cached (target >= 2x); harness overhead = {100 * (t_stream - t_bare) / t_bare:+.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
