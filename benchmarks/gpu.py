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

Eager and compiled (``trainer.compile=true``: the tokenizer and the recipe's
loss networks) side by side for the presets named in ``--compiled``, with the
ratio; the peak memory per image of each run (metrics.jsonl's
``peak_gib_per_image``). The ``sync`` section trains a few steps with
``torch.cuda.set_sync_debug_mode("error")`` between log lines: the first host
read of a device value stops it and says where.

``--section NAME`` runs one part (``benchmarks/gpu.sh`` runs each under its own
timeout, so a failure costs one section, and writes ``--out`` per section);
``--summarise DIR`` prints and writes ``DIR/summary.md`` from the sections' JSON.

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
from _common import run_metrics, stage_rates

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


def train_one(name: str, table: dict, args, tmp: Path, compiled: bool = False) -> list[dict]:
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    preset, extra = table[name]
    res = 32 if args.smoke else args.resolution
    if "{tokenizer}" in " ".join(extra):  # SigLIP's text tokenizer is on the Hub: a local stand-in
        from tokzoo.testing import make_hf_text_tokenizer

        make_hf_text_tokenizer(tmp / "siglip-tokenizer")
    run = tmp / f"{name}-{'compiled' if compiled else 'eager'}"
    overrides = [o.format(steps=args.steps, s1=max(1, args.steps // 2), teacher=tmp / "clip",
                          tokenizer=tmp / "siglip-tokenizer") for o in extra] + [
        f"data={{name: synthetic, resolution: {res}, train_size: 100000, val_size: 1000}}",
        f"trainer.batch_size={args.batch_size}", f"trainer.precision={'fp32' if args.smoke else 'bf16'}",
        f"trainer.compile={'true' if compiled else 'false'}", f"trainer.device={args.device}",
        "trainer.eval_images=16", f"trainer.ckpt_every={10 ** 9}", "trainer.log_every=10",
        f"trainer.num_workers={args.workers}", f"run_dir={run}"]
    cfg = load_run_config(preset, overrides)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train()
    wall = time.perf_counter() - t0
    r = stage_rates(run, skip_fraction=1 / 3)
    peak = {}
    for rec in run_metrics(run):
        if "peak_gib_per_image" in rec:
            peak[rec["stage"]] = max(peak.get(rec["stage"], 0.0), rec["peak_gib_per_image"])
    out = []
    tok = trainer.tokenizer
    x = torch.stack([trainer.train_set[i]["image"] for i in range(args.batch_size)]).to(trainer.device)
    amp = not args.smoke
    for stage, ips in r.items():
        kind = "semantic" if stage == "semantic" else "pixel"
        flops = model_flops(tok, x, kind, amp)
        mfu = flops * ips / (args.peak_tflops * 1e12)
        out.append({"preset": preset, "stage": stage, "compiled": compiled, "images_per_s": ips,
                    "gflops_per_image": flops / 1e9, "mfu": mfu, "peak_gib_per_image": peak.get(stage),
                    "wall_s": wall})
        mem = f"{peak[stage]:.2f} GiB/img" if stage in peak else "peak n/a (CPU)"
        print(f"{preset:>14} {stage:>14} {'compiled' if compiled else 'eager':>8}: {ips:9.1f} img/s  "
              f"{flops / 1e9:8.1f} GFLOP/img  MFU {100 * mfu:5.1f}%  {mem}", flush=True)
    return out


def sync_check(table: dict, args, tmp: Path) -> dict:
    """A few steps of vqgan with ``torch.cuda.set_sync_debug_mode("error")`` between
    log lines (off at the log lines themselves, which read by design): the first
    host read of a device value raises, and where it happened is reported."""
    import traceback

    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    if not str(args.device).startswith("cuda"):
        print("sync check: CUDA only (the CPU's own check is tests/test_train_gpu_habits.py)", flush=True)
        return {"skipped": "not on CUDA"}
    preset, extra = table["vqgan"]
    res = args.resolution
    overrides = [o.format(steps=12, s1=1, teacher=tmp / "clip", tokenizer="") for o in extra] + [
        f"data={{name: synthetic, resolution: {res}, train_size: 10000, val_size: 100}}",
        f"trainer.batch_size={args.batch_size}", "trainer.precision=bf16", f"trainer.device={args.device}",
        "trainer.eval_images=16", f"trainer.ckpt_every={10 ** 9}", "trainer.log_every=4",
        f"trainer.num_workers={args.workers}", f"run_dir={tmp / 'sync'}"]
    trainer = Trainer(load_run_config(preset, overrides))
    original = trainer._log_step

    def logged(stage, meter, images):
        torch.cuda.set_sync_debug_mode(0)
        out = original(stage, meter, images)
        if trainer.stage_step < stage.steps:  # the next steps, up to the next log line
            torch.cuda.set_sync_debug_mode("error")
        return out

    trainer._log_step = logged
    try:
        trainer.train()
        result = {"ok": True, "steps": 12, "log_every": 4}
        print("sync check: no host read of a device value between log lines (12 steps, vqgan)", flush=True)
    except RuntimeError as exc:
        where = [line for line in traceback.format_exc().splitlines() if line.strip().startswith("File")][-4:]
        result = {"ok": False, "error": str(exc).splitlines()[0], "where": where}
        print(f"sync check: FAILED: {result['error']}\n  " + "\n  ".join(where), flush=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return result


def bench_throughput(run_dir: Path, args, tmp: Path) -> dict:
    from tokzoo.bench.harness import Bench, BenchOptions

    n = 64 if args.smoke else args.bench_images
    t0 = time.perf_counter()
    Bench(BenchOptions([str(run_dir)], data="synthetic", metrics=["psnr", "ssim", "throughput"], num_images=n,
                       batch_size=args.bench_batch_size, out_dir=str(tmp / "bench"), device=args.device)).run()
    wall = time.perf_counter() - t0
    res = next(iter(json.loads((tmp / "bench" / "results.json").read_text())["tokenizers"].values()))["metrics"]
    print(f"tokzoo bench on {n} images: {n / wall:.1f} img/s end to end ({wall:.1f} s); "
          f"encode {res.get('encode_img_s', float('nan')):.1f} img/s, decode {res.get('decode_img_s', float('nan')):.1f} img/s",
          flush=True)
    return {"images": n, "wall_s": wall, "end_to_end_img_s": n / wall, "encode_img_s": res.get("encode_img_s"),
            "decode_img_s": res.get("decode_img_s")}


def agreement(args, tmp: Path) -> dict:
    """The same tokenizer and images measured on the CPU and on the GPU (fp32, TF32 off), and on the
    GPU in bf16: each result's difference from the CPU's against DEVICE_AGREEMENT (docs/ci.md)."""
    from tokzoo.bench.harness import Bench, BenchOptions
    from tokzoo.bench.protocol import DEVICE_AGREEMENT
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    run = tmp / "agree-vq"
    Trainer(load_run_config("vq-tiny", ["recipe.steps=30", "trainer.batch_size=16", "data.train_size=256",
                                        "data.val_size=32", "trainer.eval_images=32", "trainer.device=cpu",
                                        f"run_dir={run}"])).train()
    n = 64 if args.smoke else 256
    measured = {}
    for label, device, precision in (("cpu", "cpu", "fp32"), ("gpu", args.device, "fp32"),
                                     ("gpu-bf16", args.device, "bf16")):
        out = tmp / f"agree-{label}"
        Bench(BenchOptions([str(run)], data="shapes", metrics=["psnr", "ssim", "lpips", "codebook", "probe"],
                           num_images=n, probe_train_images=n, batch_size=64, out_dir=str(out), device=device,
                           precision=precision)).run()
        measured[label] = next(iter(json.loads((out / "results.json").read_text())["tokenizers"].values()))["metrics"]
    rows, ok = [], True
    for key, cpu in measured["cpu"].items():
        rule = DEVICE_AGREEMENT.get(key) or DEVICE_AGREEMENT.get(key.split("/")[0])
        if rule is None or key not in measured["gpu"]:
            continue
        kind, bound = rule
        diff = abs(measured["gpu"][key] - cpu) / (abs(cpu) if kind == "rel" and cpu else 1.0)
        bf16 = abs(measured["gpu-bf16"].get(key, float("nan")) - cpu) / (abs(cpu) if kind == "rel" and cpu else 1.0)
        within = diff <= bound
        ok &= within
        rows.append({"result": key, "cpu": cpu, "gpu": measured["gpu"][key], "diff": diff, "bound": bound,
                     "kind": kind, "within": within, "bf16_diff": bf16})
        print(f"agree {key:18s} cpu {cpu:.6g}  gpu {measured['gpu'][key]:.6g}  |d| {diff:.2g} "
              f"({'rel' if kind == 'rel' else 'abs'} bound {bound:g}: {'ok' if within else 'EXCEEDS'}); "
              f"bf16 |d| {bf16:.2g}", flush=True)
    print(f"CUDA against CPU: {'every result within its bound' if ok else 'SOME RESULT EXCEEDS ITS BOUND'} "
          f"({n} shapes images)", flush=True)
    return {"images": n, "all_within": ok, "rows": rows}


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
    1,000 classes) on the device, as the probe runs it with ``precision=bf16``:
    training steps/s at batch 64 and its share of the peak, then samples/s at
    batch 256 with CFG 2.0 and the static KV cache, eager and with the decode
    step compiled (``compile=true``: CUDA graphs), side by side."""
    from tokzoo.nn.gpt import GPT, GPT_SIZES, GPTConfig, sample
    from tokzoo.nn.gpt_train import train_gpt

    size, (vocab, length, classes, grid) = ("micro", (1024, 64, 10, (8, 8))) if args.smoke else \
        ("gpt-b", (16384, 256, 1000, (16, 16)))
    cfg = GPTConfig(vocab=vocab, length=length, num_classes=classes, positions="2d", grid=grid, **GPT_SIZES[size])
    gpt = GPT(cfg).to(args.device)
    ids, labels = torch.randint(vocab, (4096, length)), torch.randint(classes, (4096,))
    steps, batch = (5, 8) if args.smoke else (30, 64)
    amp = None if args.smoke else torch.bfloat16
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    train_gpt(gpt, ids, labels, steps=3, batch_size=batch, lr=1e-4, seed=0, autocast=amp)  # warm-up
    sync()
    t = time.perf_counter()
    train_gpt(gpt, ids, labels, steps=steps, batch_size=batch, lr=1e-4, seed=0, autocast=amp)
    sync()
    steps_s = steps / (time.perf_counter() - t)
    # FLOPs of a step: 6 x the matrices' parameters (the token embedding is a lookup) x tokens, plus attention
    matrices = sum(p.numel() for n, p in gpt.named_parameters() if p.dim() == 2 and "emb" not in n)
    flops = 6 * matrices * batch * length + 12 * cfg.depth * batch * (length + 1) ** 2 * cfg.width
    mfu = flops * steps_s / (args.peak_tflops * 1e12)
    n = 8 if args.smoke else 256
    rates = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        try:  # warm-up (compiled: at the measured batch, the one its graph is for)
            sample(gpt, torch.arange(n if compiled else 8) % classes, cfg_scale=2.0, autocast=amp, compile=compiled)
            sync()
            t = time.perf_counter()
            sample(gpt, torch.arange(n) % classes, cfg_scale=2.0, autocast=amp, compile=compiled)
            sync()
            rates[name] = n / (time.perf_counter() - t)
        except Exception as exc:  # a compiler failure is a finding, not the end of the section
            print(f"AR probe sampling, {name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                  flush=True)
            rates[name] = float("nan")
    print(f"AR probe GPT ({size}, {length} tokens, vocabulary {vocab}, {'bf16' if amp else 'fp32'}): "
          f"{steps_s:.2f} train steps/s at batch {batch} ({100 * mfu:.1f} % of {args.peak_tflops:g} TFLOP/s); "
          f"samples/s at batch {n}, CFG 2.0: {rates['eager']:.1f} eager, {rates['compiled']:.1f} compiled "
          f"({rates['compiled'] / rates['eager']:.2f}x)", flush=True)
    return {"size": size, "tokens": length, "vocab": vocab, "train_steps_s": steps_s, "batch": batch,
            "train_mfu": mfu, "samples_s": rates["eager"], "samples_s_compiled": rates["compiled"],
            "sample_batch": n}


def searches(args) -> dict:
    """The nearest-code searches at their paper shapes (#34): SGHC's semantic search (4,096 positions x
    32 dims among 24,576 l2-normalised codes) and a flat 16,384-code VQ (8 dims), as tokzoo runs them
    (a chunk of positions at a time, tokzoo.nn.nearest_code), against their bound, the plain matrix
    product of the same shapes; the peak memory of each (the score matrix held at once)."""
    import torch.nn.functional as F

    from tokzoo.nn import nearest_code

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n = 512 if args.smoke else 4096
    rows = []
    for label, k, d, cosine in (("sghc-semantic-24576", 24576, 32, True), ("flat-16384", 16384, 8, False)):
        g = torch.Generator().manual_seed(0)
        cb, z = torch.randn(k, d, generator=g).to(dev), torch.randn(n, d, generator=g).to(dev)
        if cosine:
            cb, z = F.normalize(cb, dim=-1), F.normalize(z, dim=-1)
        timings = {}
        for name, fn in (("search", lambda: nearest_code(z, cb, cosine)), ("bound", lambda: z @ cb.t())):
            fn()
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if cuda else 0
            times = []
            for _ in range(3 if args.smoke else 20):
                t = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t)
            peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if cuda else float("nan")
            timings[name] = (sorted(times)[len(times) // 2], peak)
        ratio = timings["search"][0] / timings["bound"][0]
        print(f"{label}: {n} positions, search {timings['search'][0] * 1e3:.3f} ms (peak {timings['search'][1]:.0f} "
              f"MB), bound {timings['bound'][0] * 1e3:.3f} ms (peak {timings['bound'][1]:.0f} MB): "
              f"{ratio:.2f}x its bound ({'ok' if ratio <= 2 else 'over 2x'})", flush=True)
        rows.append({"search": label, "positions": n, "search_ms": timings["search"][0] * 1e3,
                     "bound_ms": timings["bound"][0] * 1e3, "ratio": ratio, "search_peak_mb": timings["search"][1],
                     "bound_peak_mb": timings["bound"][1]})
    return {"searches": rows}


SECTIONS = ("sync", "train-vqgan", "train-semhitok", "train-vilau", "bench", "ar", "searches", "agree", "jpeg")
SCRIPTED = SECTIONS[:-1]  # what gpu.sh runs (the JPEG-folder bench: on request, --section jpeg)


def summarise(folder: Path) -> str:
    """The sections' JSON in ``folder`` -> one Markdown summary (also written there)."""
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    lines = []
    meta = next((v for v in parts.values() if "device" in v), {})
    lines.append(f"GPU check: {meta.get('device', '?')}, torch {meta.get('torch', '?')}, batch "
                 f"{meta.get('batch_size', '?')}, {meta.get('resolution', '?')} px, {meta.get('precision', '?')}")
    rows = [r for v in parts.values() for group in v.get("train", []) for r in group]
    if rows:
        lines += ["", "| preset | stage | mode | img/s | GFLOP/img | MFU | GiB/img | compiled / eager |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        eager = {(r["preset"], r["stage"]): r["images_per_s"] for r in rows if not r["compiled"]}
        for r in rows:
            ratio = (f"{r['images_per_s'] / eager[(r['preset'], r['stage'])]:.2f}x"
                     if r["compiled"] and (r["preset"], r["stage"]) in eager else "")
            mem = f"{r['peak_gib_per_image']:.2f}" if r.get("peak_gib_per_image") else "n/a"
            lines.append(f"| {r['preset']} | {r['stage']} | {'compiled' if r['compiled'] else 'eager'} | "
                         f"{r['images_per_s']:.1f} | {r['gflops_per_image']:.1f} | {100 * r['mfu']:.1f}% | {mem} | "
                         f"{ratio} |")
    for key in ("sync", "bench", "ar_probe", "searches", "agree", "jpeg_bench"):
        for v in parts.values():
            if key in v:
                lines += ["", f"{key}: {json.dumps(v[key])[:600]}"]
    missing = [s for s in SCRIPTED if s not in parts]
    if missing:
        lines += ["", "sections without a result (failed or timed out, see their logs): " + ", ".join(missing)]
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="semhitok,vqgan,vilau")
    ap.add_argument("--compiled", default="vqgan,semhitok", help="presets also trained with trainer.compile=true")
    ap.add_argument("--section", default="all", choices=("all", *SECTIONS))
    ap.add_argument("--summarise", default=None, metavar="DIR", help="print and write DIR/summary.md, then stop")
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
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return
    if args.smoke:
        args.device, args.steps, args.batch_size, args.workers = "cpu", min(args.steps, 20), 8, 0
        args.bench_batch_size = 16
    elif not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke to check the script on a CPU")
    table = SMOKE if args.smoke else PAPER
    want = SECTIONS if args.section == "all" else (args.section,)
    results: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu",
                     "torch": torch.__version__, "steps": args.steps, "batch_size": args.batch_size,
                     "resolution": 32 if args.smoke else args.resolution, "train": [],
                     "precision": "fp32" if args.smoke else "bf16"}
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
        if "sync" in want:
            results["sync"] = sync_check(table, args, tmp)
        for name in names:
            if f"train-{name}" in want:
                modes = [False, True] if name in args.compiled.split(",") and not args.smoke else [False]
                for compiled in modes:
                    results["train"].append(train_one(name, table, args, tmp, compiled))
        if {"bench", "jpeg"} & set(want):  # a tokenizer to bench: the trained vqgan, or a short training of it
            bench_run = tmp / "vqgan-eager"
            if not (bench_run / "checkpoints").is_dir():
                steps, args.steps = args.steps, 10
                train_one("vqgan", table, args, tmp)
                args.steps = steps
            if "bench" in want:
                results["bench"] = bench_throughput(bench_run, args, tmp)
            if "jpeg" in want:
                results["jpeg_bench"] = jpeg_bench(bench_run, args, tmp)
        if "ar" in want:
            results["ar_probe"] = ar_probe_cost(args)
        if "searches" in want:
            results.update(searches(args))
        if "agree" in want:
            results["agree"] = agreement(args, tmp)
    if results["train"]:
        print(f"\n| preset | stage | mode | train img/s | GFLOP/img | MFU |  ({results['device']}, batch "
              f"{args.batch_size}, {results['resolution']}px, {'fp32' if args.smoke else 'bf16'})")
        print("|---|---|---|---:|---:|---:|")
        for rows in results["train"]:
            for r in rows:
                print(f"| {r['preset']} | {r['stage']} | {'compiled' if r['compiled'] else 'eager'} | "
                      f"{r['images_per_s']:.1f} | {r['gflops_per_image']:.1f} | {100 * r['mfu']:.1f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
