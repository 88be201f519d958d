"""Training throughput of each tiny preset on this machine, side by side.

Runs every preset for a short budget through the real `tokzoo train` command
(the teacher is trained for 2 steps: same architecture, same cost per step)
and reads images/s from each run's metrics.jsonl, skipping the first logged
interval as warm-up. Prints images/s and the ratio to vqgan-tiny.

    python benchmarks/train_throughput.py [--steps 40]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import stage_rates


def train(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tokzoo.cli", "train", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    n, log = args.steps, ["trainer.log_every=10", "trainer.eval_images=16", "data.val_size=16"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        train("clip", "recipe.steps=2", "recipe.probe_images=32", f"run_dir={root / 'clip'}", *log)
        train("vqgan-tiny", f"recipe.steps={n}", f"run_dir={root / 'vqgan'}", "recipe.disc_start=0", *log)
        train("vilau-tiny", f"recipe.steps={n}", f"model.tower.checkpoint={root / 'clip'}", "recipe.disc_start=0",
              f"run_dir={root / 'vilau'}", *log)
        train("semhitok-tiny", f"recipe.stage1_steps={n}", f"recipe.stage2_steps={n}", "recipe.disc_start=0",
              f"model.teacher.checkpoint={root / 'clip'}", f"run_dir={root / 'semhitok'}", *log)
        rows = {"vqgan-tiny": stage_rates(root / "vqgan")["reconstruction"], "vilau-tiny": stage_rates(root / "vilau")["joint"]}
        sh = stage_rates(root / "semhitok")
        rows["semhitok-tiny stage 1 (semantic)"] = sh["semantic"]
        rows["semhitok-tiny stage 2 (pixel)"] = sh["pixel"]
    base = rows["vqgan-tiny"]
    print(f"training images/s, batch 16 at 32x32, GAN on, median over logged intervals ({n} steps each)")
    for name, v in rows.items():
        print(f"  {name:34s} {v:8.1f} img/s   {v / base:5.2f}x vqgan-tiny")


if __name__ == "__main__":
    main()
