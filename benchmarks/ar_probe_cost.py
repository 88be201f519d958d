"""What the AR probe costs per tokenizer, side by side, at its default size.

For the token shapes of semhitok-tiny (8x8 tokens, vocabulary 256 x 8 = 2,048),
vqgan-tiny (8x8, 1,024) and vilau-tiny (8x8 x depth 4 = 256 tokens, 1,024)
on this machine: GPT training steps/s at the default batch, and samples/s
with the KV cache and without it (the cache's speed-up as a ratio). Only the
GPT is timed, since the probe's cost grows with it; the tokenizer's decode and
the judge come on top, and the reproduction's bench wall time shows what the
whole probe cost. Then, by FLOP count, what the paper-size setting
(configs/bench/ar-probe-gpt-b.yaml: GPT-B, 256 tokens, vocabulary 16,384)
would cost on one GPU at a stated utilisation.

    python benchmarks/ar_probe_cost.py [--steps 20]
"""
from __future__ import annotations

import argparse
import time

import torch

from tokzoo.bench.generation import ARProbe
from tokzoo.nn.gpt import GPT, GPT_SIZES, GPTConfig, sample
from tokzoo.nn.gpt_train import train_gpt

SHAPES = {  # name: (vocab, tokens, positions, grid)
    "semhitok-tiny": (2048, 64, "2d", (8, 8)),
    "vqgan-tiny": (1024, 64, "2d", (8, 8)),
    "vilau-tiny": (1024, 256, "1d", (8, 8)),
}
NUM_CLASSES = 10  # shapes


def gpt_params(width: int, depth: int, vocab: int, classes: int) -> tuple[int, int]:
    """(parameters in the blocks and head, parameters in the embedding tables)."""
    hidden = 32 * -(-width * 8 // 3 // 32)
    block = 4 * width * width + 3 * width * hidden + 2 * width
    return depth * block + width + width * vocab, (vocab + classes + 1) * width


def train_flops(width: int, depth: int, vocab: int, tokens: int, classes: int) -> float:
    """Training FLOPs per sequence: 6 x (non-embedding parameters) per token plus attention (x3 for backward)."""
    dense, _ = gpt_params(width, depth, vocab, classes)
    attention = 2 * 2 * depth * tokens * tokens * width  # QK^T and AV, causal half not subtracted
    return 6 * dense * tokens + 3 * attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per tokenizer")
    ap.add_argument("--samples", type=int, default=32, help="samples timed with the cache (a quarter without)")
    args = ap.parse_args()
    defaults = ARProbe().p
    size = GPT_SIZES[defaults["size"]]
    batch = defaults["batch_size"]
    print(f"AR probe cost at the default size ({defaults['size']}: {size}), batch {batch}, "
          f"{torch.get_num_threads()} CPU threads, CFG {defaults['cfg_scale']} (two rows per sample)")
    print(f"{'tokenizer':14s} {'tokens':>6s} {'params':>7s} {'train st/s':>10s} {'probe train':>11s} "
          f"{'smp/s kv':>8s} {'smp/s full':>10s} {'kv x':>5s}")
    rows = {}
    for name, (vocab, L, pos, grid) in SHAPES.items():
        torch.manual_seed(0)
        gpt = GPT(GPTConfig(vocab=vocab, length=L, num_classes=NUM_CLASSES, positions=pos, grid=grid, **size))
        ids, labels = torch.randint(vocab, (4096, L)), torch.randint(NUM_CLASSES, (4096,))
        train_gpt(gpt, ids, labels, steps=2, batch_size=batch, lr=1e-3, seed=0)  # warm-up
        t = time.perf_counter()
        train_gpt(gpt, ids, labels, steps=args.steps, batch_size=batch, lr=1e-3, seed=0)
        steps_s = args.steps / (time.perf_counter() - t)
        classes = torch.arange(args.samples) % NUM_CLASSES
        t = time.perf_counter()
        sample(gpt, classes, defaults["cfg_scale"], use_cache=True)
        kv = args.samples / (time.perf_counter() - t)
        few = classes[:max(1, args.samples // 4)]
        t = time.perf_counter()
        sample(gpt, few, defaults["cfg_scale"], use_cache=False)
        full = len(few) / (time.perf_counter() - t)
        n = sum(p.numel() for p in gpt.parameters())
        rows[name] = steps_s
        print(f"{name:14s} {L:6d} {n / 1e6:6.2f}M {steps_s:10.2f} {defaults['steps'] / steps_s / 60:9.1f} m "
              f"{kv:8.1f} {full:10.2f} {kv / full:5.1f}")
    base = rows["vqgan-tiny"]
    print("train steps/s relative to vqgan-tiny: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in rows.items()))
    print(f"('probe train' = the default {defaults['steps']} steps at that rate; sampling as many images as "
          "measured comes on top)")
    # the paper-size setting by FLOP count
    b = GPT_SIZES["gpt-b"]
    vocab, L, classes, steps, batch_b = 16384, 256, 1000, 100_000, 256
    dense, emb = gpt_params(b["width"], b["depth"], vocab, classes)
    flops = train_flops(b["width"], b["depth"], vocab, L, classes) * batch_b * steps
    peak, mfu = 989e12, 0.4  # H100/H200 dense bf16 peak; a stated utilisation, not a measurement
    print(f"paper size (GPT-B, {L} tokens, vocabulary {vocab}, {steps:,} steps of batch {batch_b}): "
          f"{(dense + emb) / 1e6:.0f}M parameters, {flops:.2e} training FLOPs = "
          f"{flops / (peak * mfu) / 3600:.1f} GPU-hours on one H200 at {mfu:.0%} of {peak / 1e12:.0f} TFLOP/s bf16 "
          "(estimate by FLOP count, not measured)")
    sample_flops = 2 * (dense + 0) * L * 2 * 50_000  # 50k samples, CFG doubles the rows; KV cache: one token a step
    print(f"  50,000 samples with CFG: {sample_flops:.2e} FLOPs, {sample_flops / (peak * mfu) / 60:.1f} GPU-minutes "
          "by FLOPs (in practice bound by memory bandwidth per step, so longer)")


if __name__ == "__main__":
    main()
