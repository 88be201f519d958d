"""The trainer against a bare PyTorch loop: same model, data and optimiser.

`vq-tiny` (the composed conv VQ at 32x32, batch 16) trained by tokzoo's
Trainer, and by the loop a researcher would write by hand: the same model
built from the same config and seed, the same dataset and batch sampler,
AdamW with the trainer's settings, the recipe's loss (L1 + the quantizer's
losses), gradient clipping at the trainer's norm. Nothing else: no logging,
no EMA, no checks, no progress bar, no checkpoints.

Each pair runs the two one after the other (the order alternating), R pairs;
images/s is the median over 10-step intervals after the first (warm-up),
as the trainer logs it. Prints each pair's ratio and the median ratio.

    python benchmarks/trainer_overhead.py [--steps 120] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import stage_rates  # noqa: E402

INTERVAL = 10


def trainer_rate(steps: int, run_dir: Path) -> float:
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    cfg = load_run_config("vq-tiny", [f"recipe.steps={steps}", f"trainer.log_every={INTERVAL}",
                                      "trainer.eval_images=16", "data.val_size=16", f"run_dir={run_dir}"])
    from rich.console import Console

    Trainer(cfg, Console(quiet=True)).train()
    return stage_rates(run_dir)["reconstruction"]


def bare_rate(steps: int) -> float:
    import torch
    import torch.nn.functional as F

    from tokzoo.config import load_run_config
    from tokzoo.data import build_dataset, collate
    from tokzoo.models import build_model_from_config
    from tokzoo.train.sampler import StepBatches
    from tokzoo.workers import resolve_workers

    cfg = load_run_config("vq-tiny", [f"recipe.steps={steps}"])
    t = cfg["trainer"]
    torch.manual_seed(cfg["seed"])
    model = build_model_from_config(cfg).train()
    data = build_dataset(cfg["data"], "train")
    sampler = StepBatches(len(data), t["batch_size"], cfg["seed"], 0, steps, 0, 1)
    loader = iter(torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate,
                                              num_workers=resolve_workers(t["num_workers"], "cpu")))
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], betas=(t["beta1"], t["beta2"]),
                            weight_decay=t["weight_decay"])
    rates, last, images = [], time.perf_counter(), 0
    for step in range(1, steps + 1):
        x = next(loader)["image"]
        out = model(x)
        loss = F.l1_loss(out.reconstruction, x) + sum(out.quant.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        images += len(x)
        if step % INTERVAL == 0:
            now = time.perf_counter()
            rates.append(images / (now - last))
            last, images = now, 0
    return statistics.median(rates[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    pairs = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
            got = {}
            for who in order:
                got[who] = (trainer_rate(args.steps, Path(d) / f"run{r}") if who == "trainer"
                            else bare_rate(args.steps))
            pairs.append(got)
            print(f"pair {r + 1} ({order[0]} first): trainer {got['trainer']:.1f} img/s, bare loop "
                  f"{got['bare']:.1f} img/s, ratio {got['trainer'] / got['bare']:.3f}", flush=True)
    ratios = [p["trainer"] / p["bare"] for p in pairs]
    print(f"\nvq-tiny, batch 16 at 32x32, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"median over {INTERVAL}-step intervals after the first")
    print(f"trainer / bare loop: median {statistics.median(ratios):.3f} "
          f"(pairs: {', '.join(f'{x:.3f}' for x in ratios)}; goal >= 0.97)")


if __name__ == "__main__":
    main()
