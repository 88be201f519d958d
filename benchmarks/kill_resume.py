"""Random SIGKILLs during a two-stage semhitok-tiny training, each followed by
`tokzoo train ... --resume`, must end bit-identical to an uninterrupted run.

    python benchmarks/kill_resume.py --kills 20 [--out runs/kill]

Prints one line per kill (the instant, the step it resumed from, the stage)
and the verdict: every tensor of model.safetensors and ema.safetensors of both
stages' final checkpoints compared with torch.equal, and metrics.jsonl holding
each training step once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tokzoo import runfolder

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
BUDGET = ["recipe.stage1_steps=60", "recipe.stage2_steps=120", "trainer.ckpt_every=10", "trainer.log_every=5",
          "data.train_size=512", "data.val_size=64", "trainer.eval_images=32"]


def tokzoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokzoo.cli", *args]


def latest(run: Path) -> str:
    return runfolder.latest_tag(run) or "-"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--out", default="runs/kill")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clip = out / "clip"
    subprocess.run(tokzoo("train", "clip", "recipe.steps=20", f"run_dir={clip}"), env=ENV, check=True,
                   capture_output=True)
    common = ["train", "semhitok-tiny", f"model.teacher.checkpoint={clip}", *BUDGET]
    t0 = time.time()
    subprocess.run(tokzoo(*common, f"run_dir={out / 'ref'}"), env=ENV, check=True, capture_output=True)
    ref_s = time.time() - t0
    print(f"uninterrupted run: {ref_s:.0f} s")
    rng = random.Random(args.seed)
    run = out / "killed"
    kills = 0
    first = True
    while True:
        cmd = tokzoo(*common, f"run_dir={run}", *([] if first else ["--resume"]))
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        if kills < args.kills:
            wait = rng.uniform(3.0, 12.0)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                print(f"kill {kills:2d} after {wait:4.1f} s: latest checkpoint {latest(run)}")
                if runfolder.checkpoints(run).exists():
                    first = False
                continue
        err = proc.communicate()[1]
        if proc.returncode != 0:
            print(err[-2000:])
            return 1
        if kills >= args.kills or proc.returncode == 0:
            break
    same = True
    for tag in (runfolder.final_tag(1), runfolder.final_tag(2)):
        for f in ("model.safetensors", "ema.safetensors"):
            a, b = runfolder.checkpoint(out / "ref", tag) / f, runfolder.checkpoint(run, tag) / f
            if not a.is_file():
                continue
            ta, tb = load_file(str(a)), load_file(str(b))
            equal = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
            print(f"{tag}/{f}: {'bit-identical' if equal else 'DIFFERENT'} ({len(ta)} tensors)")
            same &= equal
    train_steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                   if "lr" in json.loads(line)]  # the per-step training records
    once = train_steps == sorted(set(train_steps))
    print(f"{kills} kills; metrics.jsonl: {len(train_steps)} training-step records, each step once: {once}")
    print("VERDICT:", "PASS" if same and once else "FAIL")
    return 0 if same and once else 1


if __name__ == "__main__":
    sys.exit(main())
