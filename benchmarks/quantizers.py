"""Quantizer speed side by side: SGHC vs flat nearest-neighbour search.

Same inputs for every quantizer: 16 images x 256 tokens = 4,096 vectors of
dimension 8 (the LlamaGen / SemHiTok pixel code dimension). Measured, in one run:

- SGHC end to end at paper size, what one SemHiTok token costs: the semantic
  search among K = 24,576 codes at the semantic code dimension (32, l2-normalised
  EMA codebook, as the paper preset builds it), then the search in the chosen
  code's m = 8 texture sub-codes (196,608 entries in all);
- the sub-codebook step alone, given semantic codes (a partial figure,
  labelled as such: it is not the cost of a token);
- a flat nearest-neighbour search over the same 196,608 codes (chunked over
  positions so it fits in memory);
- a flat 16,384-code VQ (LlamaGen's size), tokzoo's VectorQuantizer;
- peers from vector-quantize-pytorch: VectorQuantize(16,384) and ResidualVQ(depth 4);
- each search's bound: the plain matrix product of the same shapes (positions x
  dim @ dim x codes, no argmax, no lookup): 4,096 x 32 @ 32 x 24,576 for SGHC's
  semantic search, 4,096 x 8 @ 8 x 16,384 for the flat VQ. A search may not
  cost much more than writing its score matrix: past 1.5x of its bound (forward)
  the report names it a regression.

Forward (no grad) and forward+backward; median of repeats; peak memory of each
measurement, taken as the growth of max-RSS in a fresh subprocess (CPU) or
torch.cuda.max_memory_allocated (GPU). Prints ratios. Usage:

    python benchmarks/quantizers.py [--device cuda] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch
import torch.nn.functional as F

N_IMAGES, TOKENS, DIM = 16, 256, 8
K, M, SEMANTIC_DIM = 24576, 8, 32
END_TO_END = "sghc-end-to-end-196608"
PARTIAL = "sghc-sub-codebook-only (partial)"
#: search -> (its bound: the plain matrix product of the same shapes, (positions, dim, codes))
BOUNDS = {END_TO_END: ("matmul-4096x32x24576", (N_IMAGES * TOKENS, SEMANTIC_DIM, K)),
          "flat-16384": ("matmul-4096x8x16384", (N_IMAGES * TOKENS, DIM, 16384))}
#: a search slower than this many times its bound (forward) is a regression
BOUND_LIMIT = 1.5


def flat_chunked(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Nearest code by cosine over the whole codebook, ``chunk`` positions at a time."""
    cb = F.normalize(codebook, dim=-1)
    out = [(F.normalize(z[i:i + chunk], dim=-1) @ cb.t()).argmax(1) for i in range(0, len(z), chunk)]
    return torch.cat(out)


def build(name: str, device: str):
    from tokzoo.registry import get_registry

    reg = get_registry()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N_IMAGES, DIM, 16, 16, generator=g).to(device)
    if name == END_TO_END:
        from tokzoo.nn import VectorQuantizer

        semantic = VectorQuantizer(K, SEMANTIC_DIM, 0.25, l2_norm=True, ema=True, level="semantic").to(device)
        q = reg.create("quantizer", "sghc", num_semantic=K, sub_size=M, dim=DIM, ema=False).to(device)
        z_sem = torch.randn(N_IMAGES, SEMANTIC_DIM, 16, 16, generator=g).to(device)

        def token(x):  # the semantic code first, then its sub-codebook: both searches every token pays
            s = semantic(z_sem)
            return q(x, s.codes.levels["semantic"]).quantized.sum() + s.quantized.sum()
        return token, z
    for bound, (n, d, k) in BOUNDS.values():
        if name == bound:
            a = torch.randn(n, d, generator=g).to(device)
            b = torch.randn(d, k, generator=g).to(device)
            return (lambda x: a @ b), z
    if name == PARTIAL:
        q = reg.create("quantizer", "sghc", num_semantic=K, sub_size=M, dim=DIM, ema=False).to(device)
        parent = torch.randint(0, K, (N_IMAGES, 16, 16), generator=g).to(device)
        return lambda x: q(x, parent).quantized, z
    if name == "flat-196608":
        cb = torch.nn.Parameter(torch.randn(K * M, DIM, generator=g).to(device))

        def fwd(x):
            flat = x.permute(0, 2, 3, 1).reshape(-1, DIM)
            idx = flat_chunked(flat.detach(), cb.detach())
            q = F.normalize(cb, dim=-1)[idx]
            zf = F.normalize(flat, dim=-1)
            return (zf + (q - zf).detach()).sum() + F.mse_loss(q, zf.detach())
        return fwd, z
    if name == "flat-16384":
        q = reg.create("quantizer", "vq", codebook_size=16384, dim=DIM).to(device)
        return lambda x: q(x).quantized, z
    if name == "vqpytorch-VectorQuantize-16384":
        from vector_quantize_pytorch import VectorQuantize

        q = VectorQuantize(dim=DIM, codebook_size=16384, use_cosine_sim=True).to(device)
        return lambda x: q(x.permute(0, 2, 3, 1).reshape(N_IMAGES, -1, DIM))[0], z
    if name == "vqpytorch-ResidualVQ-4x16384":
        from vector_quantize_pytorch import ResidualVQ

        q = ResidualVQ(dim=DIM, codebook_size=16384, num_quantizers=4, shared_codebook=True).to(device)
        return lambda x: q(x.permute(0, 2, 3, 1).reshape(N_IMAGES, -1, DIM))[0], z
    raise KeyError(name)


def measure(name: str, device: str, repeats: int, backward: bool, queue) -> None:
    torch.manual_seed(0)
    fn, z = build(name, device)
    z = z.clone().requires_grad_(backward)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(repeats + 1):
        sync()
        t = time.perf_counter()
        if backward:
            out = fn(z)
            out.float().sum().backward()
        else:
            with torch.no_grad():
                fn(z)
        sync()
        if r:  # the first run is warm-up
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024)
    queue.put({"name": name, "backward": backward, "median_s": statistics.median(times), "peak_mb": peak / 2 ** 20})


def report(rows: list[dict], device: str, repeats: int) -> None:
    print(f"{N_IMAGES} images x {TOKENS} tokens, dim {DIM}, device {device}, median of {repeats}")
    print(f"{'quantizer':34s} {'pass':9s} {'median ms':>10s} {'peak MB':>9s}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:34s} {'fwd+bwd' if r['backward'] else 'fwd':9s} failed (exit {r['error']})")
            continue
        print(f"{r['name']:34s} {'fwd+bwd' if r['backward'] else 'fwd':9s} {r['median_s'] * 1e3:10.2f} {r['peak_mb']:9.1f}")
    by = {(r["name"], r["backward"]): r["median_s"] for r in rows if "error" not in r}
    print("\nratios, end to end (a SemHiTok token = semantic search among K codes")
    print("+ search in the chosen code's m sub-codes):")
    print(f"  {'':36s} {'fwd':>8s} {'fwd+bwd':>8s}")
    for label, num, den in (("flat-196608 / SGHC", "flat-196608", END_TO_END),
                            ("SGHC / flat-16384", END_TO_END, "flat-16384"),
                            ("SGHC / vqpytorch-VectorQuantize", END_TO_END, "vqpytorch-VectorQuantize-16384")):
        print(f"  {label:36s} " + " ".join(f"{by[(num, b)] / by[(den, b)]:7.2f}x" for b in (False, True)))
    print("partial, not a token's cost: the sub-codebook step alone takes")
    print(f"  {'':36s} " + " ".join(f"{by[(PARTIAL, b)] / by[(END_TO_END, b)]:8.1%}" for b in (False, True)))
    print("  of the end-to-end time")
    print(f"\nsearches vs their bound (the plain matrix product of the same shapes, forward; "
          f"regression past {BOUND_LIMIT}x):")
    print(f"  {'':46s} {'fwd':>8s} {'fwd+bwd':>8s}")
    for search, (bound, _) in BOUNDS.items():
        if (bound, False) not in by or (search, False) not in by:
            continue
        ratios = [by[(search, b)] / by[(bound, False)] for b in (False, True)]
        verdict = "REGRESSION" if ratios[0] > BOUND_LIMIT else "ok"
        print(f"  {search + ' / ' + bound:46s} " + " ".join(f"{r:7.2f}x" for r in ratios) + f"  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the measurements here")
    ap.add_argument("--from-json", default=None, help="print the report of measurements written by --json")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            report(json.load(f), args.device, args.repeats)
        return
    names = [END_TO_END, PARTIAL, "flat-196608", "flat-16384", "vqpytorch-VectorQuantize-16384",
             "vqpytorch-ResidualVQ-4x16384", *(bound for bound, _ in BOUNDS.values())]
    ctx = mp.get_context("spawn")
    rows = []
    for backward in (False, True):
        for name in names:
            if backward and name in {bound for bound, _ in BOUNDS.values()}:
                continue  # a bound is the forward product alone
            q = ctx.Queue()
            p = ctx.Process(target=measure, args=(name, args.device, args.repeats, backward, q))
            p.start()
            p.join()
            rows.append(q.get() if p.exitcode == 0 else {"name": name, "backward": backward, "error": p.exitcode})
    report(rows, args.device, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
