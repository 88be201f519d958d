"""The contract: codes and token ids, the VQ quantizer, the composed tokenizer."""
import math

import pytest
import torch

from tokzoo.api import Codes, CodeSpec
from tokzoo.registry import get_registry


@pytest.mark.parametrize("layout,vocab", [
    ("grid", {"code": 16}),
    ("residual", {"d0": 8, "d1": 8, "d2": 8}),
    ("hierarchical", {"semantic": 5, "pixel": 4}),
])
def test_token_ids_round_trip(layout, vocab):
    g = torch.Generator().manual_seed(0)
    levels = {k: torch.randint(0, v, (2, 3, 4), generator=g) for k, v in vocab.items()}
    codes = Codes(levels, vocab, layout)
    ids = codes.token_ids()
    spec = CodeSpec(layout, vocab, (3, 4))
    assert ids.shape == (2, spec.tokens_per_image)
    assert int(ids.max()) < codes.token_vocab_size
    back = Codes.from_token_ids(ids, spec)
    for k in vocab:
        assert torch.equal(back.levels[k], levels[k])


def test_hierarchical_id_formula_and_bits():
    codes = Codes({"semantic": torch.tensor([[[3]]]), "pixel": torch.tensor([[[2]]])}, {"semantic": 10, "pixel": 8}, "hierarchical")
    assert codes.token_ids().item() == 3 * 8 + 2
    spec = CodeSpec("hierarchical", {"semantic": 10, "pixel": 8}, (16, 16))
    assert spec.tokens_per_image == 256
    assert spec.bits_per_image == pytest.approx(256 * (math.log2(10) + 3))


def test_vq_straight_through_and_losses():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "vq", codebook_size=32, dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    idx = out.codes.levels["code"]
    assert idx.shape == (2, 3, 3) and idx.max() < 32
    zn = torch.nn.functional.normalize(z.detach().permute(0, 2, 3, 1).reshape(-1, 4), dim=-1)
    cb = torch.nn.functional.normalize(q.embedding.weight.detach(), dim=-1)
    assert torch.equal(idx.flatten(), (zn @ cb.t()).argmax(1))  # nearest by cosine
    expected_commit = 0.25 * ((zn - cb[idx.flatten()]) ** 2).mean()
    assert out.losses["commitment"].item() == pytest.approx(expected_commit.item(), rel=1e-5)
    out.quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # gradients pass straight through
    q.eval()
    assert torch.allclose(q.lookup(q(z.detach()).codes), q(z.detach()).quantized, atol=1e-6)


def test_vq_ema_moves_codes_towards_assigned_features():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "vq", codebook_size=4, dim=2, ema=True, decay=0.5)
    z = torch.tensor([[1.0, 0.0]]).repeat(8, 1).reshape(2, 2, 2, 2).permute(0, 3, 1, 2)
    for _ in range(20):
        out = q(z)
    used = out.codes.levels["code"].flatten()[0]
    assert torch.allclose(q.codebook()[used], torch.tensor([1.0, 0.0]), atol=1e-3)
    assert "codebook" not in out.losses


def test_vq_restarts_dead_codes():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "vq", codebook_size=64, dim=4, restart_unused=True, restart_every=2)
    z = torch.randn(4, 4, 4, 4)
    before = q.embedding.weight.detach().clone()
    q(z)
    q(z)
    q(z)  # the third call sees two steps of usage and restarts what was unused
    changed = (q.embedding.weight != before).any(1).sum().item()
    assert changed > 0


def test_composed_tokenizer_contract():
    torch.manual_seed(0)
    tok = get_registry().build("tokenizer", {"name": "composed", "resolution": 16,
                                             "encoder": {"name": "conv", "ch": 8, "ch_mult": [1, 2], "z_channels": 8},
                                             "quantizer": {"name": "vq", "codebook_size": 64, "dim": 4},
                                             "decoder": {"name": "conv", "ch": 8, "ch_mult": [1, 2], "z_channels": 8}})
    tok.eval()
    x = torch.rand(2, 3, 16, 16)
    codes = tok.encode(x)
    assert codes.grid == (8, 8) and tok.info.token_grid == (8, 8)
    assert tok.info.tokens_per_image == 64 and tok.info.bits_per_image == 64 * 6
    ids = codes.token_ids()
    a, b = tok.decode(codes), tok.decode(ids)
    assert a.shape == x.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(tok.reconstruct(x), a)
    tok.train()
    out = tok(x)
    assert out.reconstruction.shape == x.shape and "commitment" in out.quant.losses
    assert torch.equal(tok.token_features(codes), tok.quantizer.lookup(codes))  # from the codes alone
    assert tok.encoder_features(x).shape == (2, 4, 8, 8)


# -- what the host requires is declared; a bench-only tokenizer needs no forward -------------
def test_a_tokenizer_without_a_training_pass_is_benched_and_refused_by_train(tmp_path):
    """No `forward`: it builds, encodes and decodes; `tokzoo train` refuses it before writing anything."""
    import torch.nn.functional as F

    import tokzoo
    from tokzoo.api import Tokenizer, TokenizerInfo, is_trainable
    from tokzoo.config import load_run_config
    from tokzoo.errors import ConfigError
    from tokzoo.testing import registered_plugin
    from tokzoo.train.trainer import Trainer

    class Mean(Tokenizer):  # what a wrapper of released weights looks like: no training pass
        def __init__(self, resolution: int = 16):
            super().__init__()
            self._info = TokenizerInfo(resolution, CodeSpec("grid", {"grey": 256}, (4, 4)))

        @property
        def info(self):
            return self._info

        def encode(self, images):
            return Codes({"grey": (F.avg_pool2d(images.mean(1, keepdim=True), 4)[:, 0] * 255).round().long()},
                         {"grey": 256})

        def decode_codes(self, codes):
            return F.interpolate(codes.levels["grey"][:, None].float().repeat(1, 3, 1, 1) / 255, scale_factor=4)

    class Plugin:
        @staticmethod
        @tokzoo.hookimpl
        def tokzoo_register_tokenizers(register):
            register("mean-grey", Mean, "mean grey per patch")

    with registered_plugin(Plugin(), "mean-grey"):
        tok = Mean()
        assert not is_trainable(tok) and tok.reconstruct(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)
        cfg = load_run_config("vq-tiny", [f"run_dir={tmp_path / 'run'}"])
        cfg["model"] = {"name": "mean-grey", "resolution": 16}
        with pytest.raises(ConfigError, match="defines no training pass"):
            Trainer(cfg)
    assert not (tmp_path / "run").exists()
    assert is_trainable(get_registry().build("tokenizer", {"name": "composed"}))


def test_the_composed_tokenizer_names_a_declaration_a_part_lacks():
    import tokzoo
    from tokzoo.api import Quantizer
    from tokzoo.errors import ConfigError
    from tokzoo.testing import registered_plugin

    class NoDim(Quantizer):  # forgot `self.dim`
        def __init__(self, codes: int = 16):
            super().__init__()
            self.vocab = {"code": codes}

        def forward(self, features):
            raise AssertionError("never reached")

        def lookup(self, codes):
            raise AssertionError("never reached")

    class Plugin:
        @staticmethod
        @tokzoo.hookimpl
        def tokzoo_register_quantizers(register):
            register("no-dim", NoDim, "forgets its dim")

    with registered_plugin(Plugin(), "no-dim"):
        with pytest.raises(ConfigError, match=r"quantizer NoDim declares no dim \(tokzoo.api.Quantizer.dim"):
            get_registry().build("tokenizer", {"name": "composed", "quantizer": {"name": "no-dim"}})
    q = NoDim()
    q.dim = 4
    assert q.codes({"code": torch.zeros(1, 2, 2, dtype=torch.long)}).vocab == {"code": 16}  # vocab stated once


def test_metric_declarations_on_the_class_are_read_only():
    from tokzoo.api import Metric

    class Mae(Metric):
        better = {"mae": "lower"}

        def reset(self, tokenizer):
            pass

        def update(self, originals, reconstructions, codes, batch):
            pass

        def compute(self):
            return {}

    with pytest.raises(TypeError):
        Mae.better["mae"] = "higher"  # would change it for every instance
    with pytest.raises(TypeError):
        Metric.weights["x"] = "0"
    m = Mae()
    m.better = {"mae": "lower", "mae/pixel": "lower"}  # an instance's own: allowed
    assert Mae.better == {"mae": "lower"}
