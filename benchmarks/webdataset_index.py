"""What building the `webdataset` dataset costs a process: walking every
shard's tar headers (a first run, or index_cache=false) against reading the
cached index (every later run, rank and bench), end to end through
build_dataset, side by side in one run.

Shards are written in the ImageNet-WebDataset layout (KEY.jpg, KEY.cls,
KEY.txt per sample, keys in class folders) with small payloads: the walk
reads only headers, so payload size changes seeks, not the work counted here.
The page cache is warm for both (a cold network file system makes the walk
slower still; the cached read does not touch the shards).

    python benchmarks/webdataset_index.py [--shards 20] [--per-shard 1000]
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

IMAGENET_TRAIN = 1_281_167


def write(folder: Path, shards: int, per_shard: int) -> None:
    folder.mkdir(parents=True)
    jpg = b"\xff\xd8" + b"\0" * 3000
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:06d}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(per_shard):
                key = f"n{s % 1000:08d}/n{s % 1000:08d}_{i:06d}"
                for ext, data in (("jpg", jpg), ("cls", str(s % 1000).encode()), ("txt", b"a photo")):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        os.environ["TOKZOO_CACHE_DIR"] = str(root / "cache")
        from tokzoo.data import build_dataset

        write(root / "shards", args.shards, args.per_shard)
        spec = {"name": "webdataset", "path": str(root / "shards"), "resolution": 32}
        n = len(build_dataset(spec, "train"))  # writes the cache
        walk, cached = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            build_dataset({**spec, "index_cache": False}, "train")
            walk.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_dataset(spec, "train")
            cached.append(time.perf_counter() - t)
    w, c = statistics.median(walk), statistics.median(cached)
    print(f"webdataset dataset build: {args.shards} shards x {args.per_shard} samples x 3 members = {n} samples")
    print(f"(median of {args.repeats}, warm page cache, {os.cpu_count()} CPUs)")
    print(f"{'':24s}{'seconds':>9s}{'us/sample':>11s}{'ImageNet train, s':>19s}")
    for label, v in (("walk the tar headers", w), ("read the cached index", c)):
        print(f"{label:24s}{v:9.3f}{v / n * 1e6:11.1f}{v / n * IMAGENET_TRAIN:19.0f}")
    print(f"cached index: {w / c:.1f}x faster than the walk")
    print("ImageNet column: 1,281,167 samples, scaled linearly, per process")


if __name__ == "__main__":
    main()
