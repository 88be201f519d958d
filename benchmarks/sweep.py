"""SemHiTok's codebook sizes: the analysis the paper left out.

The paper lists "limited analysis of the impact of varying codebook sizes" as
a limitation. This sweeps the semantic codebook size K and the texture
sub-codebook size m of `semhitok-tiny` on `shapes` at 32x32, at the
reproduction's budget (tiny teacher `clip` 200 steps; stage 1 150 steps,
stage 2 300 steps x batch 16; 512 bench images, probe on 1,024), with the
command a user would type:

    tokzoo sweep semhitok-tiny m:model.sub_codebook_size=2,4,8,16 \\
        K:model.semantic_codebook_size=64,256,1024 --jobs 2 ...

and keeps results.{json,md,csv}, tradeoff.png, sweep.png, report.html and
sweep.json in --out (checkpoints are not results).

    python benchmarks/sweep.py                # about 40 min on 2 CPU cores
    python benchmarks/sweep.py --m 4,8 --k 64,256 --out /tmp/small
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _common import tokzoo

from tokzoo import runfolder

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "configs" / "sweeps" / "semhitok-codebooks.yaml"
KEEP = ("results.json", "results.md", "results.csv", "tradeoff.png", "sweep.png", "report.html", "sweep.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", default="2,4,8,16", help="sub-codebook sizes")
    ap.add_argument("--k", default="64,256,1024", help="semantic codebook sizes")
    ap.add_argument("--jobs", default="2")
    ap.add_argument("--work", default="runs/sweep-semhitok", help="the sweep folder (resumable)")
    ap.add_argument("--out", default="benchmarks/results/sweep-semhitok")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    teacher = work.parent / "sweep-semhitok-teacher"
    t0 = time.perf_counter()
    data = ["data.train_size=4096"]
    if not runfolder.finished_tag(teacher):
        shutil.rmtree(teacher, ignore_errors=True)
        tokzoo("train", "clip", "recipe.steps=200", f"run_dir={teacher}", *data)
    # the sweep itself is configs/sweeps/semhitok-codebooks.yaml; these words replace its own for the same keys
    tokzoo("sweep", "--config", str(SWEEP), f"m:model.sub_codebook_size={args.m}",
           f"K:model.semantic_codebook_size={args.k}", f"model.teacher.checkpoint={teacher.resolve()}",
           "--jobs", args.jobs, "--out", str(work), f"--bench-args=--config {REPO / 'configs/bench/reproduce.yaml'}")
    out.mkdir(parents=True, exist_ok=True)
    for f in KEEP:
        if (work / f).is_file():
            shutil.copy2(work / f, out / f)
    print((out / "results.md").read_text())
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
