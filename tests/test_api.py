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
