"""The baselines plugin, through the registry (as a user reaches it)."""
import pytest
import torch

import tokzoo
from tokzoo.config import load_run_config
from tokzoo.errors import CheckpointError
from tokzoo.registry import build, get_registry
from tokzoo.train.checkpoint import build_model_from_config
from tokzoo.train.trainer import Trainer


def test_rvq_levels_and_lookup():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "rvq", codebook_size=32, dim=4, depth=3, restart_every=1000)
    q.eval()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    assert list(out.codes.levels) == ["depth0", "depth1", "depth2"] and out.codes.layout == "residual"
    assert torch.allclose(q.lookup(out.codes), out.quantized, atol=1e-5)
    assert out.codes.token_ids().shape == (2, 27)
    # each extra level can only shrink the residual error
    cb = q.vq.codebook()
    errs, total = [], torch.zeros(18, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    for name in out.codes.levels:
        total = total + cb[out.codes.levels[name].flatten()]
        errs.append(float(((flat - total) ** 2).sum()))
    assert errs == sorted(errs, reverse=True)


@pytest.mark.parametrize("preset", ["vqgan", "vilau"])
def test_paper_size_presets_build_and_run_forward_without_downloads(preset):
    cfg = load_run_config(preset, ["model.tower.pretrained=random"] if preset == "vilau" else [])
    if preset == "vilau":
        assert cfg["model"]["tower"]["arch"] == "ViT-B-16-SigLIP-256"
    tok = build_model_from_config(cfg)
    tok.eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 256, 256)
        out = tok(x)
        codes = tok.encode(x)
    assert out.reconstruction.shape == (1, 3, 256, 256)
    assert tok.info.token_grid == (16, 16)
    if preset == "vqgan":
        assert tok.info.vocab == {"code": 16384} and tok.info.tokens_per_image == 256
    else:
        assert tok.info.tokens_per_image == 256 * 4 and codes.layout == "residual"


def test_vilau_tiny_round_trip(tiny_teacher, tmp_path):
    cfg = load_run_config("vilau-tiny", [f"model.tower.checkpoint={tiny_teacher}", "recipe.steps=3",
                                         "recipe.disc_start=1", "data.train_size=64", "data.val_size=16",
                                         "trainer.eval_images=16", f"run_dir={tmp_path / 'v'}"])
    Trainer(cfg).train()
    tok = tokzoo.load_tokenizer(tmp_path / "v")
    x = torch.rand(2, 3, 32, 32)
    codes = tok.encode(x)
    ids = codes.token_ids()
    assert ids.shape == (2, 8 * 8 * 4) and int(ids.max()) < 1024
    assert torch.equal(tok.decode(ids), tok.decode(codes))
    assert tok.token_features(codes).shape[:2] == (2, 32)  # from the residual tokens alone
    assert tok.encoder_features(x).shape[0] == 2
    with pytest.raises(ValueError, match="vilau takes 32x32 images.*not 64x64"):  # not a silent 32-px output
        tok.encode(torch.rand(1, 3, 64, 64))


def test_vilau_text_tower_stays_frozen(tiny_teacher, tmp_path):
    cfg = load_run_config("vilau-tiny", [f"model.tower.checkpoint={tiny_teacher}", "recipe.steps=2",
                                         "data.train_size=32", "data.val_size=16", "trainer.eval_images=16",
                                         f"run_dir={tmp_path / 'v'}"])
    trainer = Trainer(cfg)
    text_before = [p.detach().clone() for p in trainer.tokenizer.trainable_groups()["text"]]
    vis_before = [p.detach().clone() for p in trainer.tokenizer.trainable_groups()["vision"]]
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(text_before, trainer.tokenizer.trainable_groups()["text"]))
    assert any(not torch.equal(a, b) for a, b in zip(vis_before, trainer.tokenizer.trainable_groups()["vision"]))


def test_missing_tower_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build("tokenizer", {"name": "vilau", "resolution": 32, "decoder_ch_mult": [1, 2, 2],
                            "tower": {"name": "openclip", "checkpoint": str(tmp_path / "no-teacher")}})


def test_tokenizer_checkpoint_is_not_a_teacher(tmp_path):
    cfg = load_run_config("vqgan-tiny", ["recipe.steps=1", "data.train_size=16", "data.val_size=16",
                                         "trainer.eval_images=16", f"run_dir={tmp_path / 'q'}"])
    Trainer(cfg).train()
    from tokzoo.errors import ConfigError
    with pytest.raises(ConfigError, match="not an openclip model"):
        build("encoder", {"name": "openclip", "checkpoint": str(tmp_path / "q")})


def test_openclip_conv_stem_keeps_the_token_grid():
    from tokzoo.errors import ConfigError

    small = dict(width=32, layers=1, text_width=32, text_layers=1, embed_dim=16)
    patch = build("encoder", {"name": "openclip", **small})
    conv = build("encoder", {"name": "openclip", "stem": "conv", **small})
    x = torch.rand(2, 3, 32, 32)
    assert conv(x).shape == patch(x).shape == (2, 32, 8, 8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in conv.model.visual.conv1.modules())
    img, txt, _ = conv(x, texts=["a red star", "a blue ring"])
    assert img.shape == txt.shape == (2, 16)
    with pytest.raises(ConfigError, match="stem must be"):
        build("encoder", {"name": "openclip", "stem": "hybrid", **small})
    with pytest.raises(ConfigError, match="power-of-two"):
        build("encoder", {"name": "openclip", "stem": "conv", "patch_size": 6, "image_size": 36, **small})
