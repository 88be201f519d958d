"""Every registered preset, end to end, the way a user runs it.

Through the real CLI in subprocesses, from a working directory of the user's
(relative ``runs/...`` folders, the tiny teacher at ``runs/clip`` as the
presets expect): one training step per stage at batch 1 (bf16 autocast for
the tiny presets, so dtype errors surface on CPU) -> ``--resume`` for one
more step -> the run folder moved elsewhere, the teacher run deleted ->
``load_tokenizer`` from another working directory gives the outputs of the
run in place -> ``tokzoo bench`` on 2 images.

The paper-size presets (marker ``paper``, run by ``make test-paper`` and CI)
use locally made stand-in weight files of the real architectures (SigLIP
ViT-L/16-256 and ViT-B/16-256 open_clip files, the AlexNet LPIPS backbone,
the FID Inception) and a folder laid out like ImageNet.
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_tokzoo

TINY = ["clip", "vq-tiny", "vqgan-tiny", "semhitok-tiny", "vilau-tiny"]
PAPER = ["vqgan", "vilau", "semhitok", "fsq", "lfq"]
#: tokzoo-zoo's tiny presets: run with the paper group (make test-paper), to keep `make test` under 10 minutes
ZOO_TINY = ["vq-plain-tiny", "vq-fixes-tiny", "rvq-tiny", "fsq-tiny", "residual-fsq-tiny", "lfq-tiny", "bsq-tiny",
            "simvq-tiny", "latent-quantize-tiny", "msvq-tiny"]
#: ready-made released tokenizers (nothing to train): tests/test_released.py benches them at their real
#: shapes from files made in each release's layout (make test-paper); diffusers-kl: tests/test_continuous.py
READY = ["llamagen-vq16", "taming-f16-16384", "taming-f16-1024", "diffusers-vq", "diffusers-kl"]
#: what a user adds to run each preset here (the teacher, data, weights); every preset needs a line
NEEDS = {
    "clip": [],
    "vq-tiny": [],
    "vqgan-tiny": [],
    "semhitok-tiny": [],  # teacher: runs/clip, as in the preset
    "vilau-tiny": [],  # tower: runs/clip, as in the preset
    "vqgan": ["data.path={data}"],
    "vilau": ["data.path={data}", "model.tower.pretrained={w}/ViT-B-16-SigLIP-256-standin.bin",
              "model.tower.text_tokenizer={w}/siglip-tokenizer"],
    "semhitok": ["data.path={data}", "model.teacher.pretrained={w}/ViT-L-16-SigLIP-256-standin.bin"],
    "fsq": ["data.path={data}"],
    "lfq": ["data.path={data}"],
    **{name: [] for name in ZOO_TINY},
    **{name: [] for name in READY},
}
ONE_STEP = ["trainer.max_steps=1", "trainer.batch_size=1", "trainer.eval_images=1", "trainer.log_every=1"]
SMALL_DATA = ["data.train_size=16", "data.val_size=8"]  # shapes: a few images are enough for one step

PROBE = r"""
import sys, torch, tokzoo
tok = tokzoo.load_tokenizer(sys.argv[1])
g = torch.Generator().manual_seed(0)
x = torch.rand(2, 3, tok.info.resolution, tok.info.resolution, generator=g)
torch.save({"ids": tok.encode(x).token_ids(), "rec": tok.reconstruct(x)}, sys.argv[2])
"""


#: the distributions this repository ships: the suite is about them, whatever else is installed
OWN_DISTRIBUTIONS = ("tokzoo", "tokzoo-semhitok", "tokzoo-baselines", "tokzoo-zoo")


def own_presets() -> list[str]:
    """The presets the project's own distributions register (a stranger's plugin's are not ours to cover)."""
    from tokzoo.registry import get_registry

    return sorted({f.stem for _, folder, dist in get_registry().preset_dirs if dist in OWN_DISTRIBUTIONS
                   for f in Path(folder).rglob("*.yaml")})


def test_every_registered_preset_is_covered(tmp_path):
    from types import SimpleNamespace

    import tokzoo
    from tokzoo.config import list_presets
    from tokzoo.testing import registered_plugin

    assert own_presets() == sorted(NEEDS), "add the new preset to NEEDS and TINY or PAPER"
    assert sorted(TINY + PAPER + ZOO_TINY + READY) == sorted(NEEDS)
    # with a stranger's plugin installed beside ours (its own preset), the suite still covers exactly ours
    (tmp_path / "onedim-tiny.yaml").write_text("inherit: vq-tiny\n")

    @tokzoo.hookimpl
    def tokzoo_register_presets(register):
        register("onedim", tmp_path)

    with registered_plugin(SimpleNamespace(tokzoo_register_presets=tokzoo_register_presets), "onedim",
                           distribution="tokzoo-onedim", version="0.1.0"):
        assert "onedim-tiny" in list_presets() and own_presets() == sorted(NEEDS)


def imagenet_like(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    """train/ and val/ with one folder per WordNet id, JPEG files named as ImageNet's."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n0144{c:04d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(300, 500, size=2)  # not square, larger than 256
                img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
                name = f"n0144{c:04d}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * 10 + i:08d}.JPEG"
                Image.fromarray(img).save(d / name, quality=90)
    return root


def _ok(proc: subprocess.CompletedProcess, what: str) -> str:
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def _probe(run: Path, out: Path, cwd: Path) -> dict:
    import torch

    proc = subprocess.run([sys.executable, "-c", PROBE, str(run), str(out)], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    _ok(proc, f"load_tokenizer({run}) from {cwd}")
    return torch.load(out, weights_only=True)


def end_to_end(preset: str, work: Path, extra: list[str], env: dict[str, str], bench_data: str,
               timings: dict | None = None) -> None:
    """Train -> resume -> move -> load elsewhere -> bench, for one preset."""
    import torch

    t0 = time.perf_counter()
    run = work / "runs" / preset
    _ok(run_tokzoo("train", preset, *ONE_STEP, *extra, env=env, cwd=work, timeout=1800), f"train {preset}")
    if timings is not None:
        timings["one_step"] = time.perf_counter() - t0
        timings["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
        sizes = {p.relative_to(run): p.stat().st_size for p in run.rglob("*") if p.is_file()}
        timings["checkpoint_mb"] = {str(k).replace("checkpoints/", ""): v / 2 ** 20
                                    for k, v in sizes.items() if k.suffix in (".safetensors", ".pt")}
    config = json.loads((run / "config.json").read_text())
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts and all(name.endswith("-final") for name in ckpts), ckpts
    # --resume continues the last stage for one more step (optimiser state restored, checkpoint re-published)
    out = _ok(run_tokzoo("train", preset, *[o.replace("max_steps=1", "max_steps=2") for o in ONE_STEP], *extra,
                         "--resume", env=env, cwd=work, timeout=1800), f"resume {preset}")
    assert "resumed from" in out
    if timings is not None:
        timings["train"] = time.perf_counter() - t0
    if config.get("model_kind", "tokenizer") != "tokenizer":
        return  # the teacher: a trained encoder, not a tokenizer to bench
    in_place = _probe(run, work / "in_place.pt", work)
    # the user moves the run folder and the teacher's run is gone: the run still loads and benches
    moved = work.parent / f"moved-{preset}" / "run"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    teacher = work / "runs" / "clip"
    hidden = work / "clip-hidden"
    if teacher.exists():
        teacher.rename(hidden)
    try:
        elsewhere = work.parent / f"elsewhere-{preset}"
        elsewhere.mkdir()
        again = _probe(moved, elsewhere / "moved.pt", elsewhere)
        assert torch.equal(in_place["ids"], again["ids"])
        assert torch.equal(in_place["rec"], again["rec"])
        t1 = time.perf_counter()
        bench = elsewhere / "bench"
        _ok(run_tokzoo("bench", "--tokenizers", str(moved), "--data", bench_data, "--num-images", "2",
                       "--batch-size", "2", "--probe-train-images", "4", "--out", str(bench), env=env, cwd=elsewhere,
                       timeout=1800), f"bench {preset}")
        results = json.loads((bench / "results.json").read_text())
        (entry,) = results["tokenizers"].values()
        assert entry["num_images"] == 2 and {"psnr", "ssim"} <= set(entry["metrics"])
        if timings is not None:
            timings["bench"] = time.perf_counter() - t1
    finally:
        if hidden.exists():
            hidden.rename(teacher)


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory):
    """A user's working directory with the tiny teacher trained at runs/clip."""
    work = tmp_path_factory.mktemp("user") / "work"
    work.mkdir()
    return work


@pytest.mark.slow
@pytest.mark.parametrize("preset", [  # clip first: the others use runs/clip
    pytest.param(p, marks=pytest.mark.paper) if p == "vq-tiny" else p  # vqgan-tiny runs the same composed path
    for p in TINY])
def test_tiny_preset_end_to_end(preset, tiny_work):
    if preset != "clip" and not (tiny_work / "runs" / "clip").exists():
        _ok(run_tokzoo("train", "clip", *ONE_STEP, *SMALL_DATA, "recipe.probe_images=8", cwd=tiny_work),
            "train clip")
    extra = list(SMALL_DATA) + ["trainer.precision=bf16"]
    if preset == "clip":
        extra.append("recipe.probe_images=8")
    end_to_end(preset, tiny_work, extra, {}, "shapes")


@pytest.mark.paper
@pytest.mark.parametrize("preset", ZOO_TINY)
def test_zoo_tiny_preset_end_to_end(preset, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    end_to_end(preset, work, list(SMALL_DATA) + ["trainer.precision=bf16"], {}, "shapes")
