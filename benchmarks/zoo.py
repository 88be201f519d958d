"""The quantizer-family table: every zoo preset, vqgan-tiny and semhitok-tiny at
one budget, benched side by side under one protocol.

Every pixel tokenizer gets the same encoder/decoder (vq-tiny's = vqgan-tiny's
conv net: ch 32, multipliers 1-2-2, 8x8 tokens at 32x32), the same recipe
and optimiser as vqgan-tiny (L2 + a small PatchGAN from 3/4 of the budget,
AdamW lr 1e-3, betas 0.5/0.9), the same steps and batch size on `shapes`; only
the quantizer differs (SemHiTok additionally fits its semantic codebook to the
tiny teacher first). Writes results.{json,md,csv} and recon_grid.png to --out.

    python benchmarks/zoo.py            # full: 300 steps x batch 16 each (about 20 min on 2 CPU cores)
    python benchmarks/zoo.py --fast     # 60 steps each, a smoke run

Every step is the `tokzoo` command a user would type.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from _common import finish_results, tokzoo

ZOO = ["vq-plain-tiny", "vq-fixes-tiny", "rvq-tiny", "fsq-tiny", "residual-fsq-tiny", "lfq-tiny", "bsq-tiny",
       "simvq-tiny", "latent-quantize-tiny"]
BUDGETS = {  # pixel steps, semhitok stage-1 steps, clip steps, bench images, probe train images, train images
    "full": (300, 150, 200, 512, 1024, 4096),
    "fast": (60, 30, 60, 64, 256, 512),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/zoo")
    ap.add_argument("--weights-dir", default=None)
    args = ap.parse_args()
    steps, s1, clip_steps, n_bench, n_probe, n_train = BUDGETS["fast" if args.fast else "full"]
    out = Path(args.out)
    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    data = [f"data.train_size={n_train}"]
    # vqgan-tiny's recipe and optimiser, for everyone
    same = [*data, "trainer.batch_size=16", "trainer.lr=1e-3", "trainer.beta1=0.5", "trainer.beta2=0.9",
            "recipe.recon=l2", "recipe.disc_weight=0.1", f"recipe.disc_start={int(steps * 0.75)}",
            "recipe.disc_channels=32", "recipe.disc_layers=2"]
    timings = {}
    teacher = runs / "clip"
    timings["clip"] = tokzoo("train", "clip", f"recipe.steps={clip_steps}", f"run_dir={teacher}", *data)
    for name in ["vqgan-tiny", *ZOO]:
        timings[name] = tokzoo("train", name, f"recipe.steps={steps}", f"run_dir={runs / name}", *same)
    timings["semhitok-tiny"] = tokzoo("train", "semhitok-tiny", f"recipe.stage1_steps={s1}", f"recipe.stage2_steps={steps}",
                                      f"model.teacher.checkpoint={teacher}", f"run_dir={runs / 'semhitok-tiny'}", *same)
    names = ["semhitok-tiny", "vqgan-tiny", *ZOO]
    if (out / "results.json").exists():
        (out / "results.json").unlink()
    bench = ["bench", "--tokenizers", ",".join(str(runs / n) for n in names), "--num-images", str(n_bench),
             "--probe-train-images", str(n_probe), "--out", str(out)]
    timings["bench"] = tokzoo(*bench, *(["--weights-dir", args.weights_dir] if args.weights_dir else []))
    finish_results(out, {"budget": {"pixel_steps": steps, "semhitok_stage1_steps": s1, "clip_steps": clip_steps,
                                    "batch_size": 16, "train_images": n_train,
                                    "wall_s": {k: round(v, 1) for k, v in timings.items()}}})
    shutil.rmtree(runs, ignore_errors=True)  # checkpoints are not results
    print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
