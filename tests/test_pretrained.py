"""Checkpoints of any module graph, frozen parts stored once, pretrained parts required."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tokzoo.config import load_run_config
from tokzoo.train.checkpoint import build_model_from_config, load_tokenizer, load_weights, save_checkpoint


class Aliased(nn.Module):
    """A submodule held twice under two names (as open_clip's SigLIP trunk was), and tied weights."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.tower = nn.Module()
        self.tower.trunk = self.trunk
        self.head = nn.Linear(4, 4, bias=False)
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied.weight = self.head.weight
        self.register_buffer("table", torch.arange(12.0).view(3, 4))
        self.view = nn.Parameter(torch.zeros(2))


def test_aliased_tensors_are_saved_once_and_restored_aliased(tmp_path):
    torch.manual_seed(0)
    m = Aliased()
    ck = save_checkpoint(tmp_path, "stage1-final", m, {"model": {}}, {"step": 0})
    from safetensors.torch import load_file

    stored = load_file(str(ck / "model.safetensors"))
    assert "trunk.weight" in stored and "tower.trunk.weight" not in stored
    assert "head.weight" in stored and "tied.weight" not in stored
    torch.manual_seed(1)
    fresh = Aliased()
    load_weights(fresh, ck / "model.safetensors")
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert fresh.tower.trunk.weight is fresh.trunk.weight and fresh.tied.weight is fresh.head.weight


def _semhitok_tiny_random(tmp_path, extra=()):
    return load_run_config("semhitok-tiny", ["model.teacher.pretrained=random", "model.teacher.checkpoint=",
                                             "model.semantic_codebook_size=16", f"run_dir={tmp_path / 'run'}",
                                             *extra])


def test_frozen_teacher_is_stored_once_per_run_and_the_folder_moves(tmp_path):
    cfg = _semhitok_tiny_random(tmp_path)
    torch.manual_seed(0)
    tok = build_model_from_config(cfg)
    run = tmp_path / "run"
    for tag in ("step-00000001", "step-00000002", "stage1-final"):
        save_checkpoint(run, tag, tok, cfg, {"step": 0}, ema_state=tok.state_dict())
    frozen = list((run / "frozen").glob("*.safetensors"))
    assert len(frozen) == 1, frozen
    from safetensors import safe_open
    from safetensors.torch import load_file

    teacher_keys = {k for k in tok.state_dict() if k.startswith("teacher.")}
    assert teacher_keys and set(load_file(str(frozen[0]))) == teacher_keys
    for tag in ("step-00000002", "stage1-final"):
        for name in ("model.safetensors", "ema.safetensors"):
            with safe_open(str(run / "checkpoints" / tag / name), framework="pt") as f:
                assert not any(k.startswith("teacher.") for k in f.keys())
                assert json.loads(f.metadata()["tokzoo_frozen"]) == [f"frozen/{frozen[0].name}"]
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    back = load_tokenizer(moved)
    for k, v in tok.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    (moved / "frozen" / frozen[0].name).unlink()
    from tokzoo.errors import CheckpointError

    with pytest.raises(CheckpointError, match="frozen part"):
        load_tokenizer(moved)


def test_the_text_tower_of_an_open_clip_teacher_is_dropped(tiny_teacher):
    from tokzoo.registry import build

    teacher = build("encoder", {"name": "semantic-teacher", "checkpoint": str(tiny_teacher)})
    assert not any("transformer.resblocks" in k and "visual" not in k for k in teacher.state_dict())
    assert teacher(torch.rand(1, 3, 32, 32)).shape[1] == teacher.out_channels


@pytest.mark.parametrize("preset,key", [("semhitok", "model.teacher.pretrained"),
                                        ("vilau", "model.tower.pretrained"),
                                        ("semhitok-tiny", "model.teacher.checkpoint"),
                                        ("vilau-tiny", "model.tower.checkpoint")])
def test_a_pretrained_part_without_weights_is_refused_before_any_run_folder(preset, key, tmp_path, cli):
    run = tmp_path / "run"
    over = [f"run_dir={run}", "trainer.max_steps=1"]
    if preset.endswith("tiny"):
        over.append(f"{key}=")  # the user's runs/clip is not there either
    else:
        over.append(f"data.path={tmp_path}")
    out = cli("train", preset, *over, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert key.rsplit(".", 1)[0] in out.stderr and "random" in out.stderr
    assert not run.exists()


def test_a_missing_weights_file_names_the_parameter(tmp_path, cli):
    out = cli("train", "semhitok", f"run_dir={tmp_path / 'run'}", f"model.teacher.pretrained={tmp_path}/siglip.bin",
              cwd=tmp_path)
    assert out.returncode == 2 and "model.teacher.pretrained" in out.stderr and "siglip.bin" in out.stderr
    assert not (tmp_path / "run").exists()


def test_lpips_without_its_backbone_is_refused_before_any_run_folder(tmp_path, cli):
    out = cli("train", "vqgan-tiny", "recipe.perceptual_weight=1.0", f"run_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2 and "alexnet-owt-7be5be79.pth" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_random_teacher_is_recorded_and_flagged_in_bench_tables(tmp_path, cli):
    run = tmp_path / "run"
    over = ["model.teacher.pretrained=random", "model.teacher.checkpoint=", "model.semantic_codebook_size=16",
            "trainer.max_steps=1", "trainer.batch_size=2", "trainer.eval_images=2", "data.train_size=8",
            "data.val_size=4", f"run_dir={run}"]
    assert cli("train", "semhitok-tiny", *over, cwd=tmp_path).returncode == 0
    out = cli("bench", "--tokenizers", str(run), "--num-images", "4", "--metrics", "psnr", "--out",
              str(tmp_path / "bench"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert next(iter(results["tokenizers"].values()))["random_parts"] == ["model.teacher"]
    assert "RANDOM model.teacher" in (tmp_path / "bench" / "results.md").read_text()
    assert "RANDOM" in out.stdout
