"""Metric agreement: tokzoo's rFID vs torch-fidelity vs clean-fid (legacy_pytorch).

The three implementations are given the same image pairs and the same
InceptionV3 weights file, and the relative differences are printed.

* tokzoo: ``tokzoo.bench.metrics.RFID`` fed uint8 tensors, as `tokzoo bench` does;
* torch-fidelity: ``calculate_metrics`` on two folders of lossless PNGs of the
  same pixels;
* clean-fid ``mode="legacy_pytorch"`` on the same folders: the pytorch-fid
  network. Its weights file (``pt_inception-2015-12-05-6726825d.pth``) holds the
  same tensors under the same names as torch-fidelity's, so the script places
  the one file under both names in a private torch hub cache; clean-fid finds
  it there and downloads nothing.

Image pairs: the ``shapes`` val split against (a) its own test split (same
distribution, FID from sampling only), (b) a JPEG-compressed copy, (c) a
Gaussian-blurred copy, and optionally (d) a tokenizer's reconstructions
(``--tokenizer RUN_DIR``).

When the real FID weights are not on the machine (no downloads here), a
locally made stand-in of the same network is used: the three implementations
still see identical weights, so their agreement is measured; the absolute
values are not ImageNet FIDs. Usage:

    pip install clean-fid   # or: pip install -e ".[bench]"
    python benchmarks/fid_agreement.py [--images 256] [--resolution 64] [--tokenizer runs/semhitok-tiny]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from tokzoo.api import BenchContext
from tokzoo.bench.metrics import RFID
from tokzoo.data import build_dataset, collate
from tokzoo.data.preprocess import to_uint8

from _common import inception_weights

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"


def images(split: str, n: int, res: int) -> torch.Tensor:
    ds = build_dataset({"name": "shapes", "resolution": res}, split)
    return to_uint8(collate([ds[i] for i in range(min(n, len(ds)))])["image"])


def pil_map(x: torch.Tensor, fn) -> torch.Tensor:
    out = [torch.from_numpy(np.array(fn(Image.fromarray(im.permute(1, 2, 0).numpy())))).permute(2, 0, 1) for im in x]
    return torch.stack(out)


def jpeg(img: Image.Image, quality: int = 20) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def reconstructions(run: str, x: torch.Tensor) -> torch.Tensor:
    from tokzoo.train.checkpoint import load_tokenizer

    tok = load_tokenizer(run, map_location="cpu")
    out = []
    with torch.no_grad():
        for s in range(0, len(x), 32):
            xb = x[s:s + 32].float() / 255
            out.append(to_uint8(tok.decode(tok.encode(xb))))
    return torch.cat(out)


def write_pngs(x: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, im in enumerate(x):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    return folder


def ours(a: torch.Tensor, b: torch.Tensor, wdir: Path, bs: int) -> float:
    m = RFID()
    m.setup(BenchContext(weights_dir=str(wdir)))
    m.reset()
    for s in range(0, len(a), bs):
        m.update(a[s:s + bs], b[s:s + bs])
    return float(m.compute()["rfid"])


def torch_fidelity_fid(da: Path, db: Path, wfile: Path, bs: int) -> float:
    import torch_fidelity

    r = torch_fidelity.calculate_metrics(input1=str(db), input2=str(da), fid=True, cuda=False, verbose=False,
                                         cache=False, batch_size=bs, feature_extractor_weights_path=str(wfile))
    return float(r["frechet_inception_distance"])


def clean_fid(da: Path, db: Path, bs: int) -> float:
    from cleanfid import fid

    return float(fid.compute_fid(str(da), str(db), mode="legacy_pytorch", device=torch.device("cpu"),
                                 num_workers=0, batch_size=bs, verbose=False, use_dataparallel=False))


def rel(x: float, ref: float) -> str:
    return f"{(x - ref) / abs(ref):+.2e}" if ref else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tokenizer", default=None, help="also compare on this run's reconstructions")
    args = ap.parse_args()
    try:
        import cleanfid  # noqa: F401
    except ImportError:
        raise SystemExit("clean-fid is not installed: pip install clean-fid (or pip install -e '.[bench]')")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wfile = inception_weights(tmp)
        hub = tmp / "torch_home" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        shutil.copyfile(wfile, hub / PYTORCH_FID_FILE)  # clean-fid's file name, same tensors
        os.environ["TORCH_HOME"] = str(tmp / "torch_home")
        os.environ["TOKZOO_CACHE_DIR"] = str(tmp / "cache")

        ref = images("val", args.images, args.resolution)
        pairs = {
            "val vs test split": images("test", args.images, args.resolution),
            "val vs JPEG q=20": pil_map(ref, jpeg),
            "val vs blur sigma=1": pil_map(ref, lambda im: im.filter(ImageFilter.GaussianBlur(1))),
        }
        if args.tokenizer:
            from tokzoo.train.checkpoint import load_tokenizer

            res = load_tokenizer(args.tokenizer, map_location="cpu").info.resolution
            base = images("val", args.images, res)
            pairs[f"val vs {Path(args.tokenizer).name} recon ({res}px)"] = (base, reconstructions(args.tokenizer, base))

        rows = []
        for name, other in pairs.items():
            a, b = other if isinstance(other, tuple) else (ref, other)
            key = name.replace(" ", "_").replace("=", "")
            da, db = write_pngs(a, tmp / key / "a"), write_pngs(b, tmp / key / "b")
            t, f, c = ours(a, b, wfile.parent, args.batch_size), torch_fidelity_fid(da, db, wfile, args.batch_size), \
                clean_fid(da, db, args.batch_size)
            rows.append((name, t, f, c))
            print(f"{name}: tokzoo {t:.6g}  torch-fidelity {f:.6g}  clean-fid {c:.6g}", flush=True)

    print(f"\nrFID on {args.images} shapes images at {args.resolution}px, identical weights, CPU")
    print("| pair | tokzoo | torch-fidelity | clean-fid legacy_pytorch | tokzoo vs torch-fidelity | tokzoo vs clean-fid |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, f, c in rows:
        print(f"| {name} | {t:.4f} | {f:.4f} | {c:.4f} | {rel(t, f)} | {rel(t, c)} |")


if __name__ == "__main__":
    main()
