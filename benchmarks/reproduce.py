"""The paper's trade-off in miniature: SemHiTok vs VQGAN vs VILA-U-style on `shapes`.

Trains the tiny semantic teacher (`clip`), then `vqgan-tiny`, `vilau-tiny`
and `semhitok-tiny` at an equal pixel-training budget (the same number of
steps and batch size for every tokenizer's pixel stage; SemHiTok's stage 1
only fits the semantic codebook to the teacher), benches them under one
protocol, and writes results.{json,md,csv} and recon_grid.png to --out (the
full one also the VQA probe on token ids, all levels and the first alone, to
--out/vqa-ids).

    OMP_NUM_THREADS=1 python benchmarks/reproduce.py    # full, as committed: about 40 min (AR and VQA probes most of it)
    python benchmarks/reproduce.py --fast               # CI size: a few minutes
    python benchmarks/reproduce.py --weights-dir DIR    # adds LPIPS / rFID when their files are there

Every step is the `tokzoo` command a user would type.
"""
from __future__ import annotations

import argparse
import shutil
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
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="CI-sized budget")
    ap.add_argument("--out", default="benchmarks/results/reproduce")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--keep-runs", action="store_true", help="keep the trained run folders (OUT/runs)")
    args = ap.parse_args()
    size = "fast" if args.fast else "full"
    clip_steps, steps, s1, n_train = BUDGETS[size]
    out = Path(args.out)
    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    data = [f"data.train_size={n_train}"]
    timings = {}
    teacher = runs / "clip"
    timings["clip"] = tokzoo("train", "clip", f"recipe.steps={clip_steps}", f"run_dir={teacher}", *data)
    common = [*data, "trainer.batch_size=16", f"recipe.disc_start={int(steps * 0.75)}"]
    timings["vqgan-tiny"] = tokzoo("train", "vqgan-tiny", f"recipe.steps={steps}", f"run_dir={runs / 'vqgan-tiny'}", *common)
    timings["vilau-tiny"] = tokzoo("train", "vilau-tiny", f"recipe.steps={steps}", f"model.tower.checkpoint={teacher}",
                                   f"run_dir={runs / 'vilau-tiny'}", *common)
    timings["semhitok-tiny"] = tokzoo("train", "semhitok-tiny", f"recipe.stage1_steps={s1}", f"recipe.stage2_steps={steps}",
                                      f"model.teacher.checkpoint={teacher}", f"run_dir={runs / 'semhitok-tiny'}", *common)
    names = ["semhitok-tiny", "vilau-tiny", "vqgan-tiny"]
    bench = ["bench", "--config", str(CONFIGS / PROTOCOLS[size]), "--tokenizers", ",".join(str(runs / n) for n in names),
             "--out", str(out)]
    if args.weights_dir:
        bench += ["--weights-dir", args.weights_dir]
    if (out / "results.json").exists():
        (out / "results.json").unlink()
    timings["bench"] = tokzoo(*bench)
    if size == "full":  # the VQA probe on the ids, all levels and the first alone: its own protocol, folder
        ids_out = out / "vqa-ids"
        if (ids_out / "results.json").exists():
            (ids_out / "results.json").unlink()
        timings["bench vqa-ids"] = tokzoo("bench", "--config", str(CONFIGS / VQA_IDS), *bench[3:5], "--out",
                                          str(ids_out), *bench[7:])
    probes = [r["eval/probe_top1"] for r in run_metrics(teacher) if "eval/probe_top1" in r]
    finish_results(out, {
        "teacher": {"probe_top1_random_init": probes[0], "probe_top1_trained": probes[-1]},
        "budget": {"clip_steps": clip_steps, "pixel_steps": steps, "semhitok_stage1_steps": s1, "batch_size": 16,
                   "train_images": n_train, "wall_s": {k: round(v, 1) for k, v in timings.items()}}})
    if size == "full":
        finish_results(out / "vqa-ids", {"budget": {"wall_s": round(timings["bench vqa-ids"], 1)}})
    if not args.keep_runs:
        shutil.rmtree(runs, ignore_errors=True)  # checkpoints are not results
    print(f"teacher (clip) linear probe top-1: {probes[0]:.3f} random-initialised -> {probes[-1]:.3f} trained")
    print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
