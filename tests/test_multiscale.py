"""The multi-scale layout (#38): VAR's token maps of growing size in one Codes,
exact token-id round trips, usage per scale, the probes' GPT with 2-D positions
within each scale and a scale embedding, and the zoo's msvq trained and benched."""
import json

import pytest
import torch

from tokzoo.api import Codes, CodeSpec, TokenizerInfo
from tokzoo.bench.generation import gpt_positions
from tokzoo.bench.metrics import CodebookUsage
from tokzoo.errors import CodesError
from tokzoo.nn.gpt import GPT, GPTConfig, sample
from tokzoo.testing import merge_shards

SCALES = ((1, 1), (2, 2), (4, 4))
SPEC = CodeSpec("multiscale", {"s1": 16, "s2": 16, "s4": 8}, (4, 4), SCALES)


def _codes(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Codes({f"s{h}": torch.randint(SPEC.vocab[f"s{h}"], (n, h, w), generator=g) for h, w in SCALES},
                 dict(SPEC.vocab), "multiscale")


def test_token_ids_are_the_scales_in_order_and_round_trip_exactly():
    codes = _codes()
    ids = codes.token_ids()
    assert ids.shape == (3, 1 + 4 + 16) and SPEC.positions == SPEC.tokens_per_image == 21
    assert torch.equal(ids[:, :1], codes.levels["s1"].reshape(3, 1))
    assert torch.equal(ids[:, 1:5], codes.levels["s2"].reshape(3, 4))
    assert torch.equal(ids[:, 5:], codes.levels["s4"].reshape(3, 16))  # the finest scale last, row-major
    back = Codes.from_token_ids(ids, SPEC)
    assert back.layout == "multiscale" and back.scales == SCALES and back.grid == (4, 4)
    for name in SPEC.vocab:
        assert torch.equal(back.levels[name], codes.levels[name])
    assert SPEC.bits_per_image == pytest.approx(1 * 4 + 4 * 4 + 16 * 3)
    assert SPEC.level_positions("s2") == 4
    info = TokenizerInfo(16, SPEC).as_dict()
    assert info["scales"] == [[1, 1], [2, 2], [4, 4]] and info["tokens_per_image"] == 21


def test_a_multiscale_spec_or_codes_against_the_contract_is_refused():
    with pytest.raises(CodesError, match="one \\(h, w\\) per level"):
        CodeSpec("multiscale", {"a": 4, "b": 4}, (2, 2), ((1, 1),))
    with pytest.raises(CodesError, match="finest scale"):
        CodeSpec("multiscale", {"a": 4, "b": 4}, (4, 4), ((1, 1), (2, 2)))
    with pytest.raises(CodesError, match="scales belong to the 'multiscale' layout"):
        CodeSpec("grid", {"a": 4}, (2, 2), ((2, 2),))
    with pytest.raises(CodesError, match="levels are grids"):
        Codes({"a": torch.zeros(2, 1, dtype=torch.long)}, {"a": 4}, "multiscale")
    with pytest.raises(CodesError, match="one batch size"):
        Codes({"a": torch.zeros(2, 1, 1, dtype=torch.long), "b": torch.zeros(3, 2, 2, dtype=torch.long)},
              {"a": 4, "b": 4}, "multiscale")


def test_codebook_usage_is_counted_per_scale_and_merges_across_processes():
    class Tok:
        info = TokenizerInfo(16, SPEC)

    def metric(parts):
        m = CodebookUsage()
        m.reset_states()
        m.reset(Tok())
        for codes, index in parts:
            m.update(torch.zeros(codes.batch_size, 3, 4, 4, dtype=torch.uint8), None, codes, {"index": index})
        return m

    codes = Codes({"s1": torch.zeros(8, 1, 1, dtype=torch.long),  # one code used at the coarsest scale
                   "s2": torch.arange(32).reshape(8, 2, 2) % 16,  # all 16
                   "s4": torch.arange(128).reshape(8, 4, 4) % 4}, dict(SPEC.vocab), "multiscale")  # 4 of 8
    one = metric([(codes, torch.arange(8))]).compute()
    assert one["usage/s1"] == 1 / 16 and one["usage/s2"] == 1.0 and one["usage/s4"] == 0.5
    assert one["perplexity/s2"] == pytest.approx(16) and one["perplexity/s4"] == pytest.approx(4)
    half = lambda c, s: Codes({k: v[s] for k, v in c.levels.items()}, dict(c.vocab), "multiscale")  # noqa: E731
    two = merge_shards([metric([(half(codes, slice(0, 3)), torch.arange(3))]),
                        metric([(half(codes, slice(3, 8)), torch.arange(3, 8))])]).compute()
    assert dict(two) == dict(one) and two.intervals == one.intervals


def test_the_gpt_sees_2d_positions_within_each_scale_and_which_scale_a_token_is():
    kw = gpt_positions("multiscale", (4, 4), 21, SCALES)
    assert kw == {"positions": "multiscale", "grid": (4, 4), "scales": SCALES}
    assert gpt_positions("grid", (4, 4), 16) == {"positions": "2d", "grid": (4, 4)}
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab=16, length=21, num_classes=3, width=32, depth=2, heads=2, **kw)).double()
    assert gpt.scale_of.tolist() == [0] + [1] * 4 + [2] * 16
    # the 1x1 token sits at the centre of the finest grid, the 2x2 ones at the centres of its quadrants
    d4 = gpt.cos.shape[1] // 2
    centre, quads = gpt.cos[1], gpt.cos[2:6]
    rot = GPT(GPTConfig(vocab=16, length=16, num_classes=3, width=32, depth=1, heads=2, positions="2d", grid=(4, 4)))
    assert not torch.allclose(centre.float(), rot.cos[1]) and torch.allclose(quads[0, :d4], quads[1, :d4])
    for p in gpt.parameters():  # far from the uniform start: every logit matters
        torch.nn.init.normal_(p, std=0.3)
    ids = torch.randint(16, (4, 21))
    classes = torch.tensor([0, 1, 2, 0])
    gpt.eval()  # no dropout
    before = gpt(classes, ids)
    with torch.no_grad():
        gpt.scale_emb.weight[2] += 1.0
    after = gpt(classes, ids)
    # the logits up to the first finest-scale input are untouched; from there on they change
    assert torch.allclose(before[:, :6], after[:, :6]) and not torch.allclose(before[:, 6:], after[:, 6:])
    a = sample(gpt, classes, 2.0, generator=torch.Generator().manual_seed(5), use_cache=True)
    b = sample(gpt, classes, 2.0, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert torch.equal(a, b) and a.shape == (4, 21)


def test_the_zoo_msvq_decodes_its_codes_exactly_and_refuses_scales_that_do_not_fit():
    from tokzoo.errors import ConfigError
    from tokzoo.registry import get_registry

    reg = get_registry()
    q = reg.create("quantizer", "msvq", codebook_size=32, dim=4, scales=[1, 2, 4]).eval()
    f = torch.randn(2, 4, 4, 4)
    out = q(f)
    assert out.codes.layout == "multiscale" and out.codes.scales == SCALES
    assert torch.allclose(q.lookup(out.codes), out.quantized, atol=1e-6)  # lookup is the codes' exact inverse
    back = Codes.from_token_ids(out.codes.token_ids(), CodeSpec("multiscale", dict(q.vocab), (4, 4), SCALES))
    assert torch.equal(q.lookup(back), q.lookup(out.codes))
    q.train()  # straight-through: the encoder gets gradients; the codebook learns from its loss
    feats = f.clone().requires_grad_(True)
    out = q(feats)
    (out.quantized.square().mean() + sum(out.losses.values())).backward()
    assert float(feats.grad.abs().sum()) > 0 and float(q.codebooks[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="growing from coarse to fine"):
        reg.create("quantizer", "msvq", scales=[4, 2])
    with pytest.raises(ConfigError, match="finest scale is 4x4, but the encoder gives a 8x8 grid"):
        reg.create("tokenizer", "composed", resolution=32,
                   encoder={"name": "conv", "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "z_channels": 8},
                   quantizer={"name": "msvq", "dim": 4, "scales": [1, 2, 4]},
                   decoder={"name": "conv", "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "z_channels": 8})


def test_msvq_tiny_trains_and_benches_as_multiscale_with_usage_per_scale(cli, tmp_path):
    train = cli("train", "msvq-tiny", "recipe.steps=6", "data.train_size=64", "data.val_size=16",
                "trainer.eval_images=8", "trainer.batch_size=8", cwd=tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "codes used: s1" in train.stdout and "s8" in train.stdout
    bench = cli("bench", "--tokenizers", "msvq-tiny", "--num-images", "16", "--probe-train-images", "32",
                "--metrics", "psnr,codebook,ar-probe,vqa-probe", "--out", str(tmp_path / "bench"),
                "metrics.ar-probe.steps=2", "metrics.ar-probe.train_images=32", "metrics.ar-probe.judge_steps=2",
                "metrics.vqa-probe.steps=2", "metrics.vqa-probe.train_images=32", cwd=tmp_path)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    e = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"]["msvq-tiny"]
    assert e["info"]["layout"] == "multiscale" and e["info"]["tokens_per_image"] == 1 + 4 + 16 + 64
    assert e["info"]["scales"] == [[1, 1], [2, 2], [4, 4], [8, 8]]
    for s in (1, 2, 4, 8):
        assert 0 < e["metrics"][f"usage/s{s}"] <= 1 and f"perplexity/s{s}" in e["metrics"]
    assert e["metrics"]["ar_nll_bits"] / e["metrics"]["ar_nll_bits_per_token"] == pytest.approx(85)
    assert "vqa_top1" in e["metrics"] and set(e["unavailable"]) <= {"gfid"}
