"""GPU throughput of the paper-size presets (run through benchmarks/gpu.sh).

For each of semhitok (stage 1 and stage 2), vqgan and vilau at their paper
size (256x256): train a few hundred steps on the ``synthetic`` dataset with
bf16 autocast and torch.compile through the real trainer, and report

* training images/s (median of the logged rates after the first third of the
  steps, so compilation and warm-up are left out);
* model FLOPs per training image, counted once with
  ``torch.utils.flop_counter.FlopCounterMode`` over the tokenizer's forward and
  backward (the training forward for pixel stages, the semantic branch for
  SemHiTok's stage 1; loss networks - LPIPS, discriminator - are
  not model FLOPs and are left out);
* MFU = FLOPs/image x images/s / the accelerator's peak bf16 dense FLOP/s
  (``--peak-tflops``, 989 for an H100/H200 SXM).

Then ``tokzoo bench`` throughput (encode and decode images/s, plus PSNR/SSIM as
the work a real bench does) on ``--bench-images`` synthetic images with the
trained vqgan. Pretrained towers are random-initialised (``pretrained: random``)
and LPIPS uses a locally made AlexNet stand-in: the cost is the real one, the
numbers mean nothing for quality.

``--smoke`` runs the same code path at 32x32 with the tiny presets on the CPU
in about a minute: what CI-less machines can check before spending GPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import stage_rates

PAPER = {
    # name: (preset, overrides, stage steps override keys)
    "semhitok": ("semhitok", ["recipe.stage1_steps={s1}", "recipe.stage2_steps={steps}", "recipe.disc_start=0",
                              "model.teacher.pretrained=random"]),
    "vqgan": ("vqgan", ["recipe.steps={steps}", "recipe.disc_start=0"]),
    "vilau": ("vilau", ["recipe.steps={steps}", "recipe.disc_start=0", "model.tower.pretrained=random",
                        "model.tower.text_tokenizer={tokenizer}"]),
}
SMOKE = {
    "semhitok": ("semhitok-tiny", ["recipe.stage1_steps={s1}", "recipe.stage2_steps={steps}", "recipe.disc_start=0",
                                   "model.teacher.checkpoint={teacher}"]),
    "vqgan": ("vqgan-tiny", ["recipe.steps={steps}", "recipe.disc_start=0"]),
    "vilau": ("vilau-tiny", ["recipe.steps={steps}", "recipe.disc_start=0", "model.tower.checkpoint={teacher}"]),
}


def model_flops(tok, x: torch.Tensor, stage: str, amp: bool) -> float:
    """FLOPs of one forward + backward of the tokenizer on batch ``x`` (per image)."""
    from torch.utils.flop_counter import FlopCounterMode

    tok.train()
    if hasattr(tok, "freeze_semantic"):  # the stage's trainable set, as in training
        tok.freeze_semantic(stage != "semantic")
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if stage == "semantic":
            y = tok(x, branch="semantic").extras["semantic_recon"]
        else:
            y = tok(x).reconstruction
        y.float().square().mean().backward()
    tok.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def train_one(name: str, table: dict, args, tmp: Path) -> list[dict]:
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    preset, extra = table[name]
    res = 32 if args.smoke else args.resolution
    if "{tokenizer}" in " ".join(extra):  # SigLIP's text tokenizer is on the Hub: a local stand-in
        from tokzoo.testing import make_hf_text_tokenizer

        make_hf_text_tokenizer(tmp / "siglip-tokenizer")
    overrides = [o.format(steps=args.steps, s1=max(1, args.steps // 2), teacher=tmp / "clip",
                          tokenizer=tmp / "siglip-tokenizer") for o in extra] + [
        f"data={{name: synthetic, resolution: {res}, train_size: 100000, val_size: 1000}}",
        f"trainer.batch_size={args.batch_size}", f"trainer.precision={'fp32' if args.smoke else 'bf16'}",
        f"trainer.compile={'false' if args.smoke else 'true'}", f"trainer.device={args.device}",
        "trainer.eval_images=16", f"trainer.ckpt_every={10 ** 9}", "trainer.log_every=10",
        f"trainer.num_workers={args.workers}", f"run_dir={tmp / name}"]
    cfg = load_run_config(preset, overrides)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train()
    wall = time.perf_counter() - t0
    r = stage_rates(tmp / name, skip_fraction=1 / 3)
    out = []
    tok = trainer.tokenizer
    x = torch.stack([trainer.train_set[i]["image"] for i in range(args.batch_size)]).to(trainer.device)
    amp = not args.smoke
    for stage, ips in r.items():
        kind = "semantic" if stage == "semantic" else "pixel"
        flops = model_flops(tok, x, kind, amp)
        mfu = flops * ips / (args.peak_tflops * 1e12)
        out.append({"preset": preset, "stage": stage, "images_per_s": ips, "gflops_per_image": flops / 1e9,
                    "mfu": mfu, "wall_s": wall})
        print(f"{preset:>14} {stage:>14}: {ips:9.1f} img/s  {flops / 1e9:8.1f} GFLOP/img  MFU {100 * mfu:5.1f}%",
              flush=True)
    return out


def bench_throughput(run_dir: Path, args, tmp: Path) -> dict:
    from tokzoo.bench.harness import Bench, BenchOptions

    n = 64 if args.smoke else args.bench_images
    t0 = time.perf_counter()
    Bench(BenchOptions([str(run_dir)], data="synthetic", metrics=["psnr", "ssim", "throughput"], num_images=n,
                       batch_size=args.bench_batch_size, out_dir=str(tmp / "bench"), device=args.device)).run()
    wall = time.perf_counter() - t0
    res = json.loads((tmp / "bench" / "results.json").read_text())["tokenizers"][str(run_dir)]["metrics"]
    print(f"tokzoo bench on {n} images: {n / wall:.1f} img/s end to end ({wall:.1f} s); "
          f"encode {res.get('encode_img_s', float('nan')):.1f} img/s, decode {res.get('decode_img_s', float('nan')):.1f} img/s",
          flush=True)
    return {"images": n, "wall_s": wall, "end_to_end_img_s": n / wall, "encode_img_s": res.get("encode_img_s"),
            "decode_img_s": res.get("decode_img_s")}


def jpeg_bench(run_dir: Path, args, tmp: Path) -> dict:
    """`tokzoo bench` of the trained tokenizer on a locally made folder of JPEGs laid out like
    ImageNet (500x375 photos' sizes), with 0 and --workers loader processes, beside the
    decode-only limit of each (benchmarks/loader.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import loader

    n = 32 if args.smoke else args.jpeg_images
    res = 32 if args.smoke else args.resolution
    t = time.perf_counter()
    folder = loader.make_folder(tmp / "imagenet-like", n)
    print(f"made {2 * n} JPEGs in {time.perf_counter() - t:.0f} s", flush=True)
    rows = loader.compare(folder, n, args.workers or 2, res, args.bench_batch_size, args.device, tmp, str(run_dir))
    w = args.workers or 2
    print(f"JPEG folder, {n} images at {res} px: bench {w} workers / 0 = "
          f"{rows[w]['bench_img_s'] / rows[0]['bench_img_s']:.2f}x; bench / decode-only limit "
          f"{rows[w]['bench_img_s'] / rows[w]['decode_only_img_s']:.2f} ({w} workers), "
          f"{rows[0]['bench_img_s'] / rows[0]['decode_only_img_s']:.2f} (0)", flush=True)
    return {"images": n, "workers": w, "rows": rows}


def ar_probe_cost(args) -> dict:
    """The AR probe's GPT at paper size (GPT-B, 256 tokens, vocabulary 16,384,
    1,000 classes) on the device: training steps/s at batch 64 (bf16 autocast)
    and samples/s with the KV cache; the probe's cost, beside the tokenizers'."""
    from tokzoo.nn.gpt import GPT, GPT_SIZES, GPTConfig, sample, train_gpt

    size, (vocab, length, classes, grid) = ("micro", (1024, 64, 10, (8, 8))) if args.smoke else \
        ("gpt-b", (16384, 256, 1000, (16, 16)))
    gpt = GPT(GPTConfig(vocab=vocab, length=length, num_classes=classes, positions="2d", grid=grid,
                        **GPT_SIZES[size])).to(args.device)
    ids, labels = torch.randint(vocab, (4096, length)), torch.randint(classes, (4096,))
    steps, batch = (5, 8) if args.smoke else (30, 64)
    with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=not args.smoke):
        train_gpt(gpt, ids, labels, steps=3, batch_size=batch, lr=1e-4, seed=0)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_gpt(gpt, ids, labels, steps=steps, batch_size=batch, lr=1e-4, seed=0)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        steps_s = steps / (time.perf_counter() - t)
        n = 8 if args.smoke else 256
        t = time.perf_counter()
        sample(gpt, torch.arange(n) % classes, cfg_scale=2.0)
        samples_s = n / (time.perf_counter() - t)
    print(f"AR probe GPT ({size}, {length} tokens, vocabulary {vocab}): {steps_s:.2f} train steps/s at batch {batch}, "
          f"{samples_s:.1f} samples/s (KV cache, CFG 2.0, batch {n})", flush=True)
    return {"size": size, "tokens": length, "vocab": vocab, "train_steps_s": steps_s, "batch": batch,
            "samples_s": samples_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="semhitok,vqgan,vilau")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bench-images", type=int, default=10_000)
    ap.add_argument("--bench-batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--jpeg-images", type=int, default=2000, help="JPEGs of the loader-workers bench")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 dense TFLOP/s of the accelerator")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny presets, 32x32, CPU: check the script, not the GPU")
    ap.add_argument("--out", default=None, help="write the measurements here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.steps, args.batch_size, args.workers = "cpu", min(args.steps, 20), 8, 0
        args.bench_batch_size = 16
    elif not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke to check the script on a CPU")
    table = SMOKE if args.smoke else PAPER
    results: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu",
                     "torch": torch.__version__, "steps": args.steps, "batch_size": args.batch_size,
                     "resolution": 32 if args.smoke else args.resolution, "train": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from tokzoo.testing import make_alexnet_weights

        os.environ["TOKZOO_WEIGHTS_DIR"] = str(make_alexnet_weights(tmp / "weights").parent)
        os.environ["TOKZOO_CACHE_DIR"] = str(tmp / "cache")
        if args.smoke:  # the tiny presets need a tiny teacher: two steps of `tokzoo train clip`
            from tokzoo.config import load_run_config
            from tokzoo.train.trainer import Trainer

            Trainer(load_run_config("clip", ["recipe.steps=2", "recipe.probe_images=32", "data.train_size=64",
                                             "data.val_size=32", "trainer.batch_size=8", f"run_dir={tmp / 'clip'}"])).train()
        names = [n for n in args.presets.split(",") if n]
        for name in names:
            if name not in table:
                sys.exit(f"unknown preset '{name}': choose from {', '.join(table)}")
            results["train"].append(train_one(name, table, args, tmp))
        bench_run = tmp / ("vqgan" if "vqgan" in names else names[0])
        results["bench"] = bench_throughput(bench_run, args, tmp)
        results["jpeg_bench"] = jpeg_bench(bench_run, args, tmp)
        results["ar_probe"] = ar_probe_cost(args)
    print(f"\n| preset | stage | train img/s | GFLOP/img | MFU |  ({results['device']}, batch {args.batch_size}, "
          f"{results['resolution']}px, {'fp32' if args.smoke else 'bf16 + torch.compile'})")
    print("|---|---|---:|---:|---:|")
    for rows in results["train"]:
        for r in rows:
            print(f"| {r['preset']} | {r['stage']} | {r['images_per_s']:.1f} | {r['gflops_per_image']:.1f} | "
                  f"{100 * r['mfu']:.1f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
