"""Hostile inputs through the real CLI: non-finite weights, results and
reconstructions, outputs that would land among the user's files. Each case
failed (a number passed for a measurement, or a file written) before."""
from __future__ import annotations

import json
import shutil

import pytest

from tokzoo.config import load_run_config
from tokzoo.train.trainer import Trainer

TINY = ["model.resolution=32", "data.resolution=32", "data.train_size=64", "data.val_size=16",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "model.quantizer.codebook_size=32", "trainer.batch_size=8", "trainer.eval_images=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=2", f"run_dir={root / 'a'}"])).train()
    return root / "a"


def _poison(run, dest):
    """A copy of ``run`` whose weights hold NaN (a run trained to NaN, or a damaged file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, dest)
    for f in dest.rglob("*.safetensors"):
        if f.name in ("model.safetensors", "ema.safetensors"):
            with safe_open(str(f), "pt") as h:
                meta = h.metadata()
            state = load_file(str(f))
            key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2)
            state[key][0] = float("nan")
            save_file(state, str(f), metadata=meta)
    return dest


def test_non_finite_weights_are_refused_by_load_and_bench(run, tmp_path, cli):
    import tokzoo
    from tokzoo.errors import CheckpointError

    bad = _poison(run, tmp_path / "nan-run")
    with pytest.raises(CheckpointError, match="non-finite weights .*NaN or Inf"):
        tokzoo.load_tokenizer(bad)
    out = cli("bench", "--tokenizers", str(bad), "--num-images", "8", "--metrics", "psnr", "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "non-finite weights" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "b" / "results.json").exists()


def test_compare_refuses_a_non_finite_number(run, tmp_path, cli):
    res = tmp_path / "b"
    assert cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr", "--out",
               str(res)).returncode == 0
    data = json.loads((res / "results.json").read_text())
    (entry,) = data["tokenizers"].values()
    entry["metrics"]["psnr"] = float("inf")
    (tmp_path / "inf.json").write_text(json.dumps(data))  # json writes Infinity
    out = cli("compare", str(tmp_path / "inf.json"), "--baseline", str(res / "results.json"))
    assert out.returncode == 2 and "'psnr' is not finite" in out.stderr and "better" not in out.stdout
    out = cli("report", str(tmp_path / "inf.json"))
    assert out.returncode == 2 and "not finite" in out.stderr


def test_non_finite_reconstructions_flag_every_number(run, tmp_path, monkeypatch):
    import tokzoo.bench.harness as harness
    from tokzoo.bench.harness import Bench, BenchOptions

    real = harness.resolve_tokenizer

    def broken(name, device):
        tok = real(name, device)
        decode = tok.decode_codes
        tok.decode_codes = lambda codes: decode(codes) * float("nan")
        return tok

    monkeypatch.setattr(harness, "resolve_tokenizer", broken)
    opts = BenchOptions(tokenizers=[str(run)], num_images=8, metrics=["psnr", "ssim"], batch_size=8,
                        out_dir=str(tmp_path / "b"))
    (entry,) = Bench(opts).run()["tokenizers"].values()
    assert entry["flags"]["psnr"].startswith("8 reconstruction(s) held NaN or Inf")
    assert "ssim" in entry["flags"]
    md = (tmp_path / "b" / "results.md").read_text()
    assert "held NaN or Inf" in md and "†" in md


@pytest.mark.parametrize("where", ["file", "root", "cwd"])
def test_an_output_folder_among_the_users_files_is_refused_before_anything_is_written(run, tmp_path, cli, where):
    (tmp_path / "notes.txt").write_text("mine")
    target = {"file": str(tmp_path / "notes.txt"), "root": "/", "cwd": "."}[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr", "--out", target,
              cwd=str(tmp_path))
    assert out.returncode == 2 and "nothing was changed" in out.stderr and "Traceback" not in out.stderr
    train = cli("train", "vq-tiny", *TINY, "recipe.steps=1", f"run_dir={target}", cwd=str(tmp_path))
    assert train.returncode == 2 and "nothing was changed" in train.stderr, train.stderr[-500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_pixel_bomb_strip_is_skipped_before_decoding_and_every_skip_is_shown(run, tmp_path, cli):
    """A 4 KB PNG of 1 x 1,000,000 pixels (its resize would ask gigabytes) and a broken file among 8
    images: both skipped from their headers, counted apart from the images measured, shown in every output."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.new("RGB", (1, 1_000_000)).save(folder / "strip.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = cli("bench", "--tokenizers", str(run), "--data", f"imagefolder:{folder}", "--num-images", "10",
              "--metrics", "psnr", "--out", str(tmp_path / "b"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    (entry,) = json.loads((tmp_path / "b" / "results.json").read_text())["tokenizers"].values()
    assert entry["num_images"] == 8 and entry["skipped_images"] == 2
    assert any("more elongated than 16:1, not decoded" in s for s in entry["skipped"])
    said = " ".join(out.stdout.split())
    assert "2 unreadable image(s) skipped, 8 measured" in said
    assert "2 unreadable image(s) skipped, 8 measured" in (tmp_path / "b" / "results.md").read_text()
    assert "2 unreadable image(s) skipped, 8 measured" in (tmp_path / "b" / "report.html").read_text()


def test_bench_touches_nothing_of_the_users_before_its_checks_pass(run, tmp_path, cli):
    out = tmp_path / "b"
    assert cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr", "--out",
               str(out)).returncode == 0
    before = (out / "results.json").read_bytes()
    (out / ".notes.tmp").write_text("mine")  # a user's file that looks temporary
    (out / ".results.json.0123abcd.tmp").write_text("left by a killed bench")
    # a mistyped tokenizer under another protocol: refused before results.json is set aside
    typo = cli("bench", "--tokenizers", str(run) + "x", "--num-images", "4", "--metrics", "psnr", "--out", str(out))
    assert typo.returncode == 2 and "unknown tokenizer" in typo.stderr
    assert (out / "results.json").read_bytes() == before and not list(out.glob("results.2*.json"))
    again = cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr", "--out", str(out))
    assert again.returncode == 0
    assert (out / ".notes.tmp").read_text() == "mine" and not (out / ".results.json.0123abcd.tmp").exists()
    imp = cli("import", "llamagen-vq16", str(tmp_path / "missing.pt"), "--out", "/")
    assert imp.returncode == 2 and "file system's root" in imp.stderr


def test_resume_refuses_what_would_misstate_the_run(tmp_path, cli):
    args = ["train", "vq-tiny", *TINY, "recipe.steps=4", "trainer.ckpt_every=2", "trainer.max_steps=2",
            f"run_dir={tmp_path / 'r'}"]
    assert cli(*args).returncode == 0
    changed = cli(*args, "--resume", "trainer.lr=0.05", "trainer.batch_size=4")
    assert changed.returncode == 2 and "trainer.batch_size, trainer.lr differ(s)" in changed.stderr
    cfg = tmp_path / "r" / "config.json"
    recorded = cfg.read_text()
    cfg.write_text(recorded.replace('"lr": 0.0002', '"lr": 0.1'))  # edited by hand
    edited = cli(*args, "--resume")
    assert edited.returncode == 2 and "config.json was edited" in edited.stderr
    cfg.write_text(recorded)
    ok = cli(*[a for a in args if not a.startswith("trainer.max_steps")], "trainer.max_steps=4", "--resume")
    assert ok.returncode == 0, ok.stderr[-800:]


def test_report_of_a_results_file_with_absurd_numbers_draws_what_it_can(run, tmp_path, cli):
    res = tmp_path / "b"
    assert cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr,probe", "--out",
               str(res), "--probe-train-images", "16").returncode == 0
    data = json.loads((res / "results.json").read_text())
    for e in data["tokenizers"].values():
        e["metrics"]["psnr"], e["intervals"]["psnr"] = 1e308, [-1e308, 1e308]
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "results.json").write_text(json.dumps(data))
    out = cli("report", str(tmp_path / "big"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-600:]
    assert (tmp_path / "big" / "report.html").is_file()


def test_swept_numbers_keep_their_type_and_order():
    from tokzoo.bench.plots import _order
    from tokzoo.sweep.grid import grid_points, parse_grid

    axes, _ = parse_grid(["lr:trainer.lr=1e-3,2e-3,5e-4"])
    values = [p.values["lr"] for p in grid_points(axes)]
    assert values == [1e-3, 2e-3, 5e-4] and all(isinstance(v, float) for v in values)
    assert sorted(values, key=_order) == [5e-4, 1e-3, 2e-3]


def test_a_preset_file_named_dots_does_not_train_into_the_working_folder(tmp_path, cli):
    from tokzoo.config import list_presets

    (tmp_path / "...yaml").write_text(list_presets()["vq-tiny"].read_text())
    before = sorted(p.name for p in tmp_path.iterdir())
    out = cli("train", "...yaml", *TINY, "recipe.steps=1", cwd=str(tmp_path))
    assert out.returncode == 2 and "working folder itself" in out.stderr, out.stderr[-500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_folder_with_rich_markup_trains_and_prints_its_path(tmp_path, cli):
    run_dir = tmp_path / "a[/]b[bold]c"
    out = cli("train", "vq-tiny", *TINY, "recipe.steps=1", f"run_dir={run_dir}")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-500:]
    assert f"checkpoint{run_dir}/checkpoints/stage1-final" in "".join(out.stdout.split())


def test_a_batch_that_cannot_fit_is_refused_before_the_first_step(tmp_path, cli):
    out = cli("train", "vq-tiny", *TINY, "trainer.batch_size=10000000", f"run_dir={tmp_path / 'r'}")
    assert out.returncode == 2 and "trainer.batch_size=10000000 needs about" in out.stderr, out.stderr[-500:]
    assert "GiB are free" in out.stderr and not (tmp_path / "r").exists()
