"""The VQA probe against known answers: tokens that carry one attribute and
not another, uniform noise, a hierarchy whose parent carries one attribute and
whose child another; through the metric's own contract calls."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokzoo.api import BenchContext, Codes, CodeSpec, Tokenizer, TokenizerInfo
from tokzoo.bench.understanding import VQAProbe, first_level
from tokzoo.errors import DataError
from tokzoo.nn.gpt import GPT, GPTConfig, prefix_mask

RES, G, V = 16, 4, 8  # 16x16 images, 4x4 tokens of 8 values
L = G * G
COLOURS, SHAPES = ("red", "green", "blue", "white"), ("circle", "square", "star", "ring")


class BlockTokens(Tokenizer):
    """Tokens are the image: each 4x4 block holds one grey level of V;
    ``hierarchical``: the parent is the level // 4 (of 2), the child level % 4."""

    token_features_kind = "one-hot of the token values"

    def __init__(self, hierarchical: bool = False):
        super().__init__()
        self.hierarchical = hierarchical
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    @property
    def info(self):
        vocab = {"parent": 2, "child": 4} if self.hierarchical else {"pix": V}
        return TokenizerInfo(RES, CodeSpec("hierarchical" if self.hierarchical else "grid", vocab, (G, G)))

    def encode(self, images):
        level = (F.avg_pool2d(images[:, :1], RES // G)[:, 0] * (V - 1)).round().long().clamp(0, V - 1)
        if self.hierarchical:
            return Codes({"parent": level // 4, "child": level % 4}, {"parent": 2, "child": 4}, "hierarchical")
        return Codes({"pix": level}, {"pix": V})

    def decode_codes(self, codes):
        lv = codes.levels
        level = lv["parent"] * 4 + lv["child"] if self.hierarchical else lv["pix"]
        x = level.float()[:, None] / (V - 1)
        return F.interpolate(x, scale_factor=RES // G, mode="nearest").repeat(1, 3, 1, 1)

    def token_features(self, codes):
        lv = codes.levels
        if "pix" in lv:
            level, n = lv["pix"], V
        elif "child" in lv:
            level, n = lv["parent"] * 4 + lv["child"], V
        else:
            level, n = lv["parent"], 2
        return F.one_hot(level, n).float().permute(0, 3, 1, 2)  # [B, n, G, G]


def image_of(tokens: torch.Tensor) -> torch.Tensor:
    x = tokens.view(1, 1, G, G).float() / (V - 1)
    return F.interpolate(x, scale_factor=RES // G, mode="nearest").repeat(1, 3, 1, 1)[0]


def dataset(kind: str, n: int, seed: int, attributes: bool = True):
    """Random colour and shape per image; the tokens: ``colour`` the colour in
    every block's value, ``shape`` the shape, ``noise`` uniform, ``both`` the
    colour in the parent (level // 4 ... of 2: colour // 2) - see ``tiers``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        c, s = (int(torch.randint(4, (1,), generator=g)) for _ in range(2))
        noise = torch.randint(V, (L,), generator=g)
        if kind == "colour":
            tokens = torch.full((L,), c)
        elif kind == "shape":
            tokens = torch.full((L,), s)
        elif kind == "tiers":  # parent (level // 4) = colour's lower bit, child (level % 4) = shape
            tokens = torch.full((L,), (c % 2) * 4 + s)
        else:
            tokens = noise
        sample = {"image": image_of(tokens), "label": c, "caption": "", "index": i}
        if attributes:
            sample["attributes"] = {"colour": COLOURS[c] if kind != "tiers" else COLOURS[c % 2], "shape": SHAPES[s]}
        out.append(sample)
    return out


def run_probe(kind: str, n_train=512, n_val=128, tok=None, train=None, val=None, **params):
    train = train if train is not None else dataset(kind, n_train, seed=1)
    val = val if val is not None else dataset(kind, n_val, seed=2)
    ctx = BenchContext(batch_size=64, num_images=len(val), train_split=lambda: train, dataset=f"test-{kind}",
                       show_progress=False)
    settings = dict(size="micro", steps=120, batch_size=64, lr=3e-3, dropout=0.0, train_images=len(train), seed=0)
    settings.update(params)
    metric = VQAProbe(**settings)
    metric.setup(ctx)
    tok = (tok or BlockTokens()).eval()
    metric.reset(tok)
    for s in range(0, len(val), 64):
        part = val[s:s + 64]
        x = torch.stack([p["image"] for p in part])
        batch = {"image": x, "label": torch.tensor([p["label"] for p in part])}
        if any("attributes" in p for p in part):
            batch["attributes"] = [p.get("attributes", {}) for p in part]
        metric.update(None, None, tok.encode(x), batch)
    return metric, metric.compute()


@pytest.mark.parametrize("carried,lost,input", [("colour", "shape", "features"), ("shape", "colour", "ids")])
def test_tokens_that_carry_one_attribute_answer_it_and_not_the_other(carried, lost, input):
    metric, out = run_probe(carried, input=input)
    assert out[f"vqa_{carried}"] >= 0.95, out
    assert abs(out[f"vqa_{lost}"] - out[f"vqa_{lost}_chance"]) <= 0.15, out
    assert out[f"vqa_{lost}_chance"] == pytest.approx(0.25, abs=0.1)  # 4 values, about uniform
    assert out["vqa_top1"] == pytest.approx((out["vqa_colour"] + out["vqa_shape"]) / 2)
    per = out.per_image
    assert float(per["vqa_top1"].mean()) == pytest.approx(out["vqa_top1"])  # the interval's values
    assert metric.better["vqa_top1"] == "higher" and "vqa_colour_chance" not in metric.better


def test_noise_tokens_score_chance_on_every_question():
    _, out = run_probe("noise")
    for q in ("colour", "shape"):
        assert abs(out[f"vqa_{q}"] - out[f"vqa_{q}_chance"]) <= 0.15, out


def test_the_answers_are_reproducible_with_a_fixed_seed():
    _, a = run_probe("colour", n_train=256, n_val=64, steps=40)
    _, b = run_probe("colour", n_train=256, n_val=64, steps=40)
    for k, v in a.per_image.items():
        assert torch.equal(v, b.per_image[k]), k


def test_the_first_level_alone_loses_what_only_the_child_carries():
    """Parent = one bit of colour, child = the shape: all the tokens answer both,
    the first level alone answers colour and not shape."""
    _, out = run_probe("tiers", tok=BlockTokens(hierarchical=True), input="ids", first_level=True, steps=200)
    assert out["vqa_colour"] >= 0.95 and out["vqa_shape"] >= 0.95, out
    assert out["vqa_first_colour"] >= 0.95, out
    assert abs(out["vqa_first_shape"] - out["vqa_first_shape_chance"]) <= 0.15, out


def test_a_one_level_tokenizer_says_why_it_has_no_first_level_view():
    metric, out = run_probe("colour", n_train=128, n_val=32, steps=5, first_level=True)
    assert "vqa_first_top1" not in out and "one level" in out.not_measured["vqa_first_top1"]
    assert first_level(Codes({"a": torch.zeros(1, 2, 2, dtype=torch.long)}, {"a": 3})) is None


def test_data_without_attributes_is_unavailable_with_the_reason():
    train = dataset("colour", 32, seed=1, attributes=False)
    ctx = BenchContext(train_split=lambda: train, show_progress=False)
    with pytest.raises(DataError, match="no attributes"):
        VQAProbe(size="micro").setup(ctx)


def test_a_class_only_dataset_asks_one_question_and_odd_names_are_left_out_with_the_reason():
    def relabel(samples):
        for s in samples:
            s["attributes"] = {"class": s["attributes"]["colour"], "Bad Name!": "x", "id": str(s["index"])}
        return samples

    metric, out = run_probe("colour", train=relabel(dataset("colour", 256, 1)), val=relabel(dataset("colour", 64, 2)),
                            steps=60, max_answers=16)
    assert {k for k in out if not k.endswith("_chance")} == {"vqa_class", "vqa_top1"}
    why = out.not_measured
    assert "lower-case" in why["vqa-probe attribute 'Bad Name!'"]
    assert "256 different answers" in why["vqa_id"] and "max_answers=16" in why["vqa_id"]


def test_prefix_mode_answers_each_query_as_its_own_sequence():
    """A query's hidden state does not depend on the other queries, and the prefix never sees them."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab=V, length=L, num_classes=3, width=32, depth=2, heads=2, dropout=0.0,
                      positions="2d", grid=(G, G))).eval()
    prefix = m.tok_emb(torch.randint(V, (2, L)))
    together = m.prefix_hidden(prefix, torch.tensor([0, 1, 2]))
    for q in range(3):
        alone = m.prefix_hidden(prefix, torch.tensor([q]))
        assert torch.allclose(together[:, q], alone[:, 0], atol=1e-5)
    mask = prefix_mask(2, 2)
    assert mask.tolist() == [[True, True, False, False], [True, True, False, False],
                             [True, True, True, False], [True, True, False, True]]


def test_tokens_that_mark_the_object_cell_answer_where_it_is():
    """Position is read from where a token sits (rotary positions), not from its value."""
    def marked(n, seed):
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(n):
            cell = int(torch.randint(L, (1,), generator=g))
            tokens = torch.zeros(L, dtype=torch.long)
            tokens[cell] = 5
            out.append({"image": image_of(tokens), "label": 0, "caption": "", "index": i,
                        "attributes": {"position": f"cell {cell}"}})
        return out

    _, out = run_probe("marked", train=marked(512, 1), val=marked(128, 2), steps=250)
    assert out["vqa_position"] >= 0.9 and out["vqa_position_chance"] <= 0.15, out
