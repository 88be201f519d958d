"""The paper's trade-off in miniature: SemHiTok vs VQGAN vs VILA-U-style on `shapes`.

Trains the tiny semantic teacher (`clip`), then `vqgan-tiny`, `vilau-tiny`
and `semhitok-tiny` at an equal pixel-training budget (the same number of
steps and batch size for every tokenizer's pixel stage; SemHiTok's stage 1
only fits the semantic codebook to the teacher), benches them under one
protocol, and writes results.{json,md,csv} and recon_grid.png to --out (the
full one also the VQA probe on token ids, all levels and the first alone, to
--out/vqa-ids, and the text-ocr probe on `text` images at their resolution,
to --out/text). ``--benches text`` trains and runs that bench alone, leaving
the others' outputs as they are.

With ``--repeats N`` the whole recipe is trained N times (the presets' own
seed, then ``seed=1`` .. ``seed=N-1``: teacher and tokenizers), each repeat
benched under the same protocol into --out/repeats/seed-K/ (``--repeat-metrics``
narrows what the repeats measure: every metric's number is independent of
which others run), and each entry of --out/results.json records its metrics'
values over the repeats and their sample standard deviation (``repeats``):
``tokzoo compare`` judges a change against the larger of that spread and the
image bootstrap. ``--jobs 2`` runs two repeats side by side (their logs in
their folders); ``--reuse`` keeps repeats already made under the same budget.

    OMP_NUM_THREADS=1 python benchmarks/reproduce.py    # full, as committed: about an hour (AR and VQA probes most of it)
    OMP_NUM_THREADS=1 python benchmarks/reproduce.py --benches text   # train, then the text-ocr bench alone
    python benchmarks/reproduce.py --fast               # CI size: a few minutes
    python benchmarks/reproduce.py --weights-dir DIR    # adds LPIPS / rFID when their files are there
    OMP_NUM_THREADS=1 python benchmarks/reproduce.py --repeats 3 --jobs 2 --repeat-metrics psnr,ssim,codebook,probe

Every step is the `tokzoo` command a user would type.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import finish_results, run_metrics, tokzoo

BUDGETS = {
    # name: (clip steps, pixel steps, semhitok stage-1 steps, train images)
    "full": (200, 300, 150, 4096),  # the tiny presets' own budgets (what `make demo` trains)
    "fast": (120, 120, 60, 1024),
}
#: the bench protocols (image counts, metrics): configs/bench/, the one place they are written
PROTOCOLS = {"full": "reproduce.yaml", "fast": "ci.yaml"}
#: the full reproduction's second bench: the VQA probe on token ids, and on the first level alone
VQA_IDS = "vqa-ids.yaml"
#: its third: does the tokenizer keep the text (text-ocr on `text` images at the tokenizers' 32 px)
TEXT = "text.yaml"
#: the benches of the full reproduction, each into its own folder: OUT, OUT/vqa-ids, OUT/text
BENCHES = ("shapes", "vqa-ids", "text")
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "bench"


NAMES = ["semhitok-tiny", "vilau-tiny", "vqgan-tiny"]


def pipeline(size: str, out: Path, seed: int | None, metrics: list[str] | None, weights_dir: str | None,
             keep_runs: bool, log: Path | None, benches: tuple[str, ...] = BENCHES) -> dict:
    """Train the teacher and the three tokenizers (``seed``: None = the presets' own), bench them
    into ``out`` (the full size also the vqa-ids and text benches, for the presets' seed; ``benches``:
    which of them run); the budget block."""
    clip_steps, steps, s1, n_train = BUDGETS[size]
    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    data = [f"data.train_size={n_train}", *([f"seed={seed}"] if seed is not None else [])]
    timings = {}
    teacher = runs / "clip"
    timings["clip"] = tokzoo("train", "clip", f"recipe.steps={clip_steps}", f"run_dir={teacher}", *data, log=log)
    common = [*data, "trainer.batch_size=16", f"recipe.disc_start={int(steps * 0.75)}"]
    timings["vqgan-tiny"] = tokzoo("train", "vqgan-tiny", f"recipe.steps={steps}", f"run_dir={runs / 'vqgan-tiny'}",
                                   *common, log=log)
    timings["vilau-tiny"] = tokzoo("train", "vilau-tiny", f"recipe.steps={steps}", f"model.tower.checkpoint={teacher}",
                                   f"run_dir={runs / 'vilau-tiny'}", *common, log=log)
    timings["semhitok-tiny"] = tokzoo("train", "semhitok-tiny", f"recipe.stage1_steps={s1}",
                                      f"recipe.stage2_steps={steps}", f"model.teacher.checkpoint={teacher}",
                                      f"run_dir={runs / 'semhitok-tiny'}", *common, log=log)
    bench = ["bench", "--config", str(CONFIGS / PROTOCOLS[size]), "--tokenizers", ",".join(str(runs / n) for n in NAMES),
             "--out", str(out), *(["--metrics", ",".join(metrics)] if metrics else [])]
    if weights_dir:
        bench += ["--weights-dir", weights_dir]
    full = size == "full" and seed is None
    own = {"vqa-ids": VQA_IDS, "text": TEXT}  # the other benches: their own protocol, their own folder
    for name in [b for b in benches if b == "shapes" or (full and b in own)]:
        folder = out if name == "shapes" else out / name
        if (folder / "results.json").exists():
            (folder / "results.json").unlink()
        config = CONFIGS / (PROTOCOLS[size] if name == "shapes" else own[name])
        timings["bench" if name == "shapes" else f"bench {name}"] = tokzoo(
            "bench", "--config", str(config), *bench[3:5], "--out", str(folder),
            *(bench[7:] if name == "shapes" else bench[7 + (2 if metrics else 0):]), log=log)
    probes = [r["eval/probe_top1"] for r in run_metrics(teacher) if "eval/probe_top1" in r]
    if not keep_runs:
        shutil.rmtree(runs, ignore_errors=True)  # checkpoints are not results
    for name in [b for b in benches if b != "shapes" and full and b in own]:
        finish_results(out / name, {"budget": {"wall_s": round(timings[f"bench {name}"], 1)}}, show=log is None)
    if "shapes" not in benches:
        return {"wall_s": {k: round(v, 1) for k, v in timings.items()}}
    budget = {"clip_steps": clip_steps, "pixel_steps": steps, "semhitok_stage1_steps": s1, "batch_size": 16,
              "train_images": n_train, **({"seed": seed} if seed is not None else {}),
              **({"metrics": metrics} if metrics else {}), "wall_s": {k: round(v, 1) for k, v in timings.items()}}
    finish_results(out, {"teacher": {"probe_top1_random_init": probes[0], "probe_top1_trained": probes[-1]},
                         "budget": budget}, show=log is None)
    return budget


def made_before(out: Path, size: str, seed: int | None, metrics: list[str] | None) -> bool:
    """Whether ``out`` holds a bench made under this budget, seed and metrics (``--reuse``)."""
    try:
        b = json.loads((out / "results.json").read_text()).get("budget") or {}
    except (OSError, ValueError):
        return False
    clip_steps, steps, s1, n_train = BUDGETS[size]
    return (b.get("clip_steps"), b.get("pixel_steps"), b.get("semhitok_stage1_steps"), b.get("train_images"),
            b.get("seed"), b.get("metrics")) == (clip_steps, steps, s1, n_train, seed, metrics)


def record_repeats(out: Path, folders: list[Path], seeds: list) -> None:
    """Write each entry's values over the repeats and their sample sd into out/results.json."""
    from tokzoo.bench.outputs import write_outputs
    from tokzoo.bench.protocol import PROTOCOL_KEYS, protocol_value

    res = json.loads((out / "results.json").read_text())
    others = [json.loads((f / "results.json").read_text()) for f in folders]
    for o, f in zip(others, folders):
        differs = [k for k in PROTOCOL_KEYS if k != "extractors"
                   and protocol_value(o["protocol"], k) != protocol_value(res["protocol"], k)]
        if differs:
            sys.exit(f"{f}: benched under another protocol ({differs[0]}); run again without --reuse")
    for name, e in res["tokenizers"].items():
        values = {}
        for metric, v in e["metrics"].items():
            vs = [v, *((o["tokenizers"].get(name) or {}).get("metrics", {}).get(metric) for o in others)]
            if all(isinstance(x, (int, float)) for x in vs):
                values[metric] = vs
        e["repeats"] = {"n": len(seeds), "seeds": seeds, "sd": {m: statistics.stdev(v) for m, v in values.items()},
                        "values": values}
    write_outputs(out, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="CI-sized budget")
    ap.add_argument("--out", default="benchmarks/results/reproduce")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--keep-runs", action="store_true", help="keep the trained run folders (OUT/runs)")
    ap.add_argument("--repeats", type=int, default=1, help="train the recipe N times, record the spread (default 1)")
    ap.add_argument("--repeat-metrics", default=None, help="what the repeats bench, e.g. psnr,ssim,codebook,probe "
                                                           "(default: the protocol's metrics)")
    ap.add_argument("--jobs", type=int, default=1, help="repeats run side by side")
    ap.add_argument("--reuse", action="store_true", help="keep benches already made under the same budget")
    ap.add_argument("--benches", default=",".join(BENCHES),
                    help=f"which benches of the full reproduction run (default: all, {','.join(BENCHES)}); "
                         "the others' outputs are left as they are")
    args = ap.parse_args()
    benches = tuple(b.strip() for b in args.benches.split(",") if b.strip())
    if not benches or set(benches) - set(BENCHES):
        sys.exit(f"--benches: choose from {', '.join(BENCHES)}")
    if args.repeats < 1 or args.jobs < 1:
        sys.exit("--repeats and --jobs are whole numbers >= 1")
    size = "fast" if args.fast else "full"
    out = Path(args.out)
    metrics = [m.strip() for m in args.repeat_metrics.split(",") if m.strip()] if args.repeat_metrics else None
    jobs = [(out, None, None)] + [(out / "repeats" / f"seed-{k}", k, metrics) for k in range(1, args.repeats)]
    if args.reuse:
        jobs = [j for j in jobs if not made_before(*j[:1], size, *j[1:])]
    side_by_side = args.jobs > 1 and len(jobs) > 1

    def run(job):
        folder, seed, m = job
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "reproduce.log" if side_by_side else None
        if log is not None:
            log.unlink(missing_ok=True)
            print(f"repeat {'preset seed' if seed is None else f'seed={seed}'}: log in {log}", flush=True)
        try:
            budget = pipeline(size, folder, seed, m, args.weights_dir, args.keep_runs, log, benches)
        except Exception:
            if log is not None:
                print(f"{folder} failed; the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-30:]))
            raise
        if log is not None:
            log.unlink()
        if seed is not None:  # a repeat keeps its numbers; its pictures and report are the main one's kind
            kept = [folder / "report.html", folder / "results.csv", *folder.glob("*.png"), *folder.glob("*.safetensors")]
            for f in kept:
                f.unlink(missing_ok=True)
        return budget

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for budget in pool.map(run, jobs):
            print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in budget["wall_s"].items()), flush=True)
    if args.repeats > 1:
        record_repeats(out, [out / "repeats" / f"seed-{k}" for k in range(1, args.repeats)],
                       ["preset", *range(1, args.repeats)])
        print(f"recorded the spread over {args.repeats} trainings in {out / 'results.json'}")
    if "shapes" not in benches:
        return
    teacher = json.loads((out / "results.json").read_text())["teacher"]
    print(f"teacher (clip) linear probe top-1: {teacher['probe_top1_random_init']:.3f} random-initialised -> "
          f"{teacher['probe_top1_trained']:.3f} trained")


if __name__ == "__main__":
    main()
