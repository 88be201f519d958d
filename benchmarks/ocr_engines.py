"""The text-ocr probe's engines side by side on the known-answer set: the `text`
dataset's val originals at 256 px (every word on its ground-truth box, nothing
lost), PP-OCRv4 (rapidocr-onnxruntime) against Tesseract (Debian's tesseract-ocr,
LSTM, English, one line per crop): T-ACC and T-NED by word-size bucket, and
recognition-only throughput in crops/s on this machine (the crops made once,
outside the timing). The stronger engine is text-ocr's default.

    python benchmarks/ocr_engines.py [--images 48] [--resolution 256]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--resolution", type=int, default=256)
    args = ap.parse_args()
    import torch

    from tokzoo.bench.text import ENGINES, NAMES, crop, ned_score, normalise
    from tokzoo.data.preprocess import to_uint8
    from tokzoo.data.text import TextDataset, bucket_of

    ds = TextDataset("val", args.resolution, val_size=args.images)
    crops, truth, bucket = [], [], []
    for i in range(args.images):
        s = ds[i]
        img = to_uint8(s["image"])
        for w in s["words"]:
            crops.append(crop(img, w["box"]))
            truth.append(w["text"])
            bucket.append(bucket_of(w["box"][3] - w["box"][1], args.resolution))
    print(f"text val, {args.images} images at {args.resolution} px: {len(crops)} words "
          f"({', '.join(f'{n} {bucket.count(n)}' for n in NAMES)}); originals (the ceiling), "
          f"{torch.get_num_threads()} threads")
    print(f"{'engine':10s} {'T-ACC':>6s} {'small':>6s} {'medium':>6s} {'large':>6s} {'T-NED':>6s} {'crops/s':>8s}")
    rows = {}
    for name, engine_cls in ENGINES.items():
        try:
            engine = engine_cls()
        except Exception as exc:  # an engine that is not installed is reported, not fatal
            print(f"{name:10s} not available: {exc}")
            continue
        engine.read(crops[:4])  # warm-up
        t = time.perf_counter()
        read = engine.read(crops)
        rate = len(crops) / (time.perf_counter() - t)
        exact = np.array([normalise(r) == normalise(g) for r, g in zip(read, truth)], dtype=float)
        ned = np.array([ned_score(r, g) for r, g in zip(read, truth)])
        per = [exact[np.array(bucket) == n].mean() for n in NAMES]
        rows[name] = (exact.mean(), rate)
        print(f"{name:10s} {exact.mean():6.3f} " + " ".join(f"{p:6.3f}" for p in per) + f" {ned.mean():6.3f} {rate:8.1f}")
    if len(rows) == 2:
        (a, (acc_a, rate_a)), (b, (acc_b, rate_b)) = rows.items()
        print(f"\n{a} / {b}: T-ACC {acc_a / max(acc_b, 1e-9):.2f}x, speed {rate_a / rate_b:.2f}x")


if __name__ == "__main__":
    main()
