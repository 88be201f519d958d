"""What the bench's hot loops owe the GPU, checked on the CPU (#34): a nearest-code search
holds a bounded score matrix and finds the same codes as one pass; the AR probe's sampler
reads nothing back per token, keeps one KV cache and gives the tokens it always gave; the
probes' training loop reads its loss only at the progress bar's interval."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tokzoo.nn import SEARCH_CHUNK_BYTES, VectorQuantizer, nearest_code
from tokzoo.nn.gpt import GPT, GPTConfig, sample
from tokzoo.nn.gpt_train import fit


class HostReads(TorchDispatchMode):
    """Counts tokzoo's own reads of a tensor's value on the host (``.item()``, ``float()``,
    ``bool()``: on a GPU each waits for the device). Reads made inside torch are not counted:
    AdamW's step counters live on the CPU even when the model is on a GPU."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            import traceback

            wrappers = ("_compile.py", "eval_frame.py", "_python_dispatch.py")  # around this method
            frames = [f.filename for f in traceback.extract_stack()[:-1] if not f.filename.endswith(wrappers)]
            if frames and "/tokzoo/" in frames[-1]:  # the Python line that asked for the value
                self.reads += 1
        return func(*args, **(kwargs or {}))


def _one_pass(z, cb, cosine):
    if cosine:
        return (z @ cb.t()).argmax(1)
    return (z.pow(2).sum(1, keepdim=True) - 2 * z @ cb.t() + cb.pow(2).sum(1)[None]).argmin(1)


def test_a_search_chunked_over_positions_finds_the_same_codes_under_its_memory_bound():
    g = torch.Generator().manual_seed(0)
    for k, d, cosine in ((24576, 32, True), (16384, 8, False), (37, 8, False)):
        cb, z = torch.randn(k, d, generator=g), torch.randn(3000, d, generator=g)
        if cosine:
            cb, z = F.normalize(cb, dim=-1), F.normalize(z, dim=-1)
        want = _one_pass(z, cb, cosine)
        for chunk in (SEARCH_CHUNK_BYTES, 4 * k * 7, 1):  # the default, 7 positions at a time, one
            assert torch.equal(nearest_code(z, cb, cosine, chunk_bytes=chunk), want)
    # the score matrix held at once: one chunk (the default: 64 MB), never positions x codes
    seen = []

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.mm.default:
                seen.append(tuple(out.shape))
            return out

    vq = VectorQuantizer(24576, 32, 0.25, l2_norm=True, ema=True, level="semantic").eval()
    with torch.no_grad(), Shapes():
        vq(torch.randn(16, 32, 16, 16, generator=g))  # 4,096 positions: a 403 MB matrix in one pass
    assert seen and max(r * c * 4 for r, c in seen) <= SEARCH_CHUNK_BYTES


def _gpt(**kw) -> GPT:
    cfg = GPTConfig(**{"vocab": 61, "length": 16, "num_classes": 5, "width": 64, "depth": 2, "heads": 2,
                       "positions": "2d", "grid": (4, 4), **kw})
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    return model


def _one_draw_per_token(model: GPT, classes, cfg_scale, seed):
    """The reference: L full passes, one float64 inverse-CDF draw per token, each read as it is made."""
    gen = torch.Generator().manual_seed(seed)
    B = len(classes)
    cls = torch.cat([classes, torch.full_like(classes, model.null_class)]) if cfg_scale != 1 else classes
    out = torch.zeros(B, 0, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for _ in range(model.cfg.length):
            ids = torch.cat([out, out]) if cfg_scale != 1 else out
            logits = model.head(model.hidden(cls, ids))[:, -1]
            if cfg_scale != 1:
                logits = logits[B:] + cfg_scale * (logits[:B] - logits[B:])
            probs = torch.softmax(logits.double(), dim=-1)
            u = torch.rand(B, 1, generator=gen, dtype=torch.float64)
            nxt = torch.searchsorted(probs.cumsum(-1), u).clamp(max=probs.shape[1] - 1)
            out = torch.cat([out, nxt], dim=1)
    return out


def test_sampling_draws_on_the_device_with_one_cache_and_the_same_tokens():
    model = _gpt()
    classes = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    for scale in (1.0, 2.0, 0.0):
        want = _one_draw_per_token(model, classes, scale, seed=11)
        with HostReads() as reads:
            got = sample(model, classes, scale, 1.0, torch.Generator().manual_seed(11))
        assert torch.equal(got, want) and reads.reads == 0  # nothing read on the host, token by token
        assert torch.equal(sample(model, classes, scale, 1.0, torch.Generator().manual_seed(11), use_cache=False),
                           want)
    # the cache is allocated once for the whole sequence, written in place, and freed after
    model.setup_cache(len(classes))
    with torch.no_grad():
        model.prefill(classes)
        first = model.blocks[0].attn.k_cache.data_ptr(), tuple(model.blocks[0].attn.k_cache.shape)
        for pos in range(1, 5):
            model.decode(classes % 61, torch.tensor(pos))
    k = model.blocks[0].attn.k_cache
    assert (k.data_ptr(), tuple(k.shape)) == first == (first[0], (7, 2, 17, 32))
    assert k[:, :, :5].abs().sum() > 0 and not k[:, :, 5:].any()  # positions 0..4 written, the rest untouched
    model.drop_cache()
    assert "k_cache" not in dict(model.named_buffers(recurse=True)) and "k_cache" not in model.state_dict()


def test_the_compiled_decode_step_gives_the_tokens_of_the_eager_one():
    """#34: one graph for every position (the position is a tensor, every shape fixed):
    torch.compile(fullgraph=True) of the decode step samples the very tokens of eager,
    for a 2-D and a multi-scale GPT."""
    for kw in ({}, {"positions": "multiscale", "length": 21, "grid": (4, 4), "scales": ((1, 1), (2, 2), (4, 4))}):
        model = _gpt(**kw)
        classes = torch.tensor([0, 1, 2, 3, 4, 0, 2])
        want = sample(model, classes, 2.0, 1.0, torch.Generator().manual_seed(5))
        assert torch.equal(sample(model, classes, 2.0, 1.0, torch.Generator().manual_seed(5), use_cache=False), want)
        got = sample(model, classes, 2.0, 1.0, torch.Generator().manual_seed(5), compile=True)
        assert torch.equal(got, want)
        # the next batch of that size reuses the cache (a CUDA graph's addresses stay), zeroed first
        kept = model.blocks[0].attn.k_cache.data_ptr()
        again = sample(model, classes, 2.0, 1.0, torch.Generator().manual_seed(5), compile=True)
        assert torch.equal(again, want) and model.blocks[0].attn.k_cache.data_ptr() == kept


def test_the_probes_training_loop_reads_its_loss_at_the_progress_interval_only():
    model = _gpt()
    x = torch.randint(0, 61, (32, 16), generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 5

    def loss_at(gen):
        idx = torch.randint(32, (8,), generator=gen)
        logits = model(y[idx], x[idx])
        return F.cross_entropy(logits.reshape(-1, 61), x[idx].reshape(-1))

    shown = []
    with HostReads() as reads:
        losses = fit(model, loss_at, steps=30, lr=1e-3, seed=0, on_step=lambda s, loss: shown.append(loss),
                     read_every=10)
    assert [i for i, v in enumerate(shown) if v is not None] == [9, 19, 29] and len(losses) == 30
    assert shown[9] == losses[9] and shown[29] == losses[29]
    assert reads.reads == 3, reads.reads  # the three it showed; clipping and the final history read nothing more


def test_images_travel_as_uint8_when_that_is_exact():
    from tokzoo.bench.measure import bench_collate

    k = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    exact = [{"image": k[i].float().div(255), "label": 0, "caption": "", "index": i} for i in range(2)]
    batch = bench_collate(exact)
    assert "image" not in batch and batch["image_u8"].dtype == torch.uint8 and torch.equal(batch["image_u8"], k.byte())
    # what the tokenizer sees on the device: the very floats the dataset gave
    assert torch.equal(batch["image_u8"].float().div_(255), torch.stack([s["image"] for s in exact]))
    other = [{**s, "image": s["image"] * 0.999} for s in exact]  # a dataset of other float values: kept as they are
    batch = bench_collate(other)
    assert "image_u8" not in batch and torch.equal(batch["image"], torch.stack([s["image"] for s in other]))


def test_the_codes_range_check_reads_the_device_once_for_every_level():
    from tokzoo.api import Codes
    from tokzoo.codes import check_codes
    from tokzoo.errors import ContractError

    codes = Codes({"semantic": torch.tensor([[0, 5]]), "pixel": torch.tensor([[1, 7]])}, {"semantic": 8, "pixel": 8},
                  "hierarchical")
    with HostReads() as reads:
        check_codes(codes, object())
    assert reads.reads == 0  # one .tolist() of every level's range: no per-level scalar read
    bad = Codes({"semantic": torch.tensor([[0, 5]]), "pixel": torch.tensor([[1, 9]])}, {"semantic": 8, "pixel": 8},
                "hierarchical")
    import pytest

    with pytest.raises(ContractError, match="level 'pixel' holds codes from 1 to 9, outside its vocabulary 0..7"):
        check_codes(bad, object())
