"""The metric contract: declared states on the metric's device, combined by the
host on that device (no CPU tensor reaches a collective when the metrics run
on an accelerator), one MetricResult per compute, and merge_shards = the host's
reduce. The accelerator is stood in for by PyTorch's ``meta`` device: a tensor
there has a shape and no data, so any host read or CPU allocation mixed into
the state fails or shows."""
import pytest
import torch

from tokzoo.api import BenchContext, Codes, CodeSpec, Metric, MetricResult, TokenizerInfo
from tokzoo.bench import measure
from tokzoo.bench.collectives import Collectives, reduce_states
from tokzoo.registry import get_registry
from tokzoo.testing import merge_shards


class Recorder:
    """A stand-in for the collectives of 2 processes: records every tensor it is handed."""

    world_size = 2

    def __init__(self):
        self.devices: list[tuple[str, str]] = []

    def all_reduce(self, t, op="sum"):
        self.devices.append((f"all_reduce {op}", t.device.type))

    def all_gather_cat(self, t):
        self.devices.append(("all_gather", t.device.type))
        return torch.cat([t, t])

    def all_gather_object(self, parts, obj):
        for x in (obj if isinstance(obj, (tuple, list)) else [obj]):
            if isinstance(x, torch.Tensor):
                self.devices.append(("all_gather_object", x.device.type))
        parts[:] = [obj] * len(parts)


class Tok:
    info = TokenizerInfo(8, CodeSpec("grid", {"code": 16}, (4, 4)))


def _batch(device, n=4, res=32):
    g = torch.Generator().manual_seed(0)
    o8 = torch.randint(0, 256, (n, 3, res, res), generator=g, dtype=torch.uint8)
    codes = Codes({"code": torch.randint(0, 16, (n, 4, 4), generator=g)}, {"code": 16}, "grid")
    batch = {"image": o8.float() / 255, "label": torch.arange(n), "index": torch.arange(n), "encode_s": 0.01,
             "decode_s": 0.02, "warmup": False}
    return o8.to(device), o8.flip(-1).to(device), codes.to(device), batch


@pytest.mark.parametrize("name", ["psnr", "ssim", "codebook", "throughput", "edges"])
def test_declared_state_lives_on_the_device_and_reaches_the_collectives_there(name):
    metric = get_registry().create("metric", name)
    metric.setup(BenchContext(device=torch.device("meta"), show_progress=False))
    metric.reset_states()
    metric.reset(Tok())
    assert metric.declared_states(), f"{name} declares no state"
    for _ in range(2):
        metric.update(*_batch("meta"))
    for key, value in metric.state.items():
        for t in (value if isinstance(value, list) else [value]):
            assert t.device.type == "meta", f"{name}: state {key} on {t.device}"
    recorder = Recorder()
    measure.reduce_across({name: metric}, recorder)
    assert recorder.devices and all(d == "meta" for _, d in recorder.devices), recorder.devices


def test_the_recorder_catches_state_kept_on_the_cpu():
    """The check above can fail: a metric written before declared states, its sum on the CPU."""
    class OldStyle(Metric):
        def reset(self, tokenizer):
            self.state = {"sum": torch.zeros(())}

        def update(self, originals, reconstructions, codes, batch):
            self.state["sum"] += originals.sum().cpu() if originals.device.type != "meta" else 0

        def compute(self):
            return {"s": float(self.state["sum"])}

    metric = OldStyle()
    metric.setup(BenchContext(device=torch.device("meta")))
    metric.reset(Tok())
    recorder = Recorder()
    reduce_states(metric, recorder)
    assert recorder.devices == [("all_reduce sum", "cpu")]


class _FakeDist:
    """torch.distributed for rank 0 of 2 under a backend that takes no CPU tensor."""

    class ReduceOp:
        SUM, MAX, MIN = "sum", "max", "min"

    def __init__(self, peer_rows):
        self.peer, self.seen = peer_rows, []

    def get_backend(self):
        return "nccl"

    def all_reduce(self, t, op):
        self.seen.append(("all_reduce", op, t.device.type))
        t.mul_(2)  # the peer holds the same

    def all_gather(self, outs, t):
        self.seen.append(("all_gather", t.device.type))
        outs[0].copy_(t)
        if t.dtype == torch.long and t.shape == (1,):  # the row counts
            outs[1].fill_(len(self.peer))
        else:
            outs[1].zero_()
            outs[1][:len(self.peer)] = self.peer


def test_collectives_gather_rows_of_different_counts_in_rank_order():
    coll = Collectives(2, "cpu", dist=_FakeDist(torch.tensor([[7.0, 8.0]])))
    mine = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert torch.equal(coll.all_gather_cat(mine), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    few = Collectives(2, "cpu", dist=_FakeDist(torch.tensor([[7.0, 8.0], [9.0, 9.0]])))
    assert torch.equal(few.all_gather_cat(torch.zeros(0, 2)), torch.tensor([[7.0, 8.0], [9.0, 9.0]]))
    t = torch.tensor([1.0, 5.0])
    coll.all_reduce(t, "max")
    assert torch.equal(t, torch.tensor([2.0, 10.0])) and coll.dist.seen[-1][:2] == ("all_reduce", "max")


def test_merge_shards_equals_one_process_for_every_reduction():
    class Stats(Metric):
        def __init__(self):
            self.add_state("total", torch.zeros(()), "sum")
            self.add_state("top", torch.full((), -1.0), "max")
            self.add_state("low", torch.full((), 1e9), "min")
            self.add_state("each", torch.zeros(0), "cat")

        def update(self, originals, reconstructions, codes, batch):
            v = originals.double().mean((1, 2, 3))
            self.state["total"] += v.sum()
            self.state["top"] = torch.maximum(self.state["top"], v.max().float())
            self.state["low"] = torch.minimum(self.state["low"], v.min().float())
            self.state["each"].append(v.float())

        def compute(self):
            each = self.cat_state("each")
            return MetricResult(values={"total": float(self.state["total"]), "top": float(self.state["top"]),
                                        "low": float(self.state["low"])}, per_image={"mean": each})

    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    whole = Stats()
    whole.update(x, x, None, {})
    shards = [Stats(), Stats(), Stats()]
    for shard, part in zip(shards, (x[:3], x[3:4], x[4:])):
        shard.update(part, part, None, {})
    one, merged = whole.compute(), merge_shards(shards).compute()
    assert merged == pytest.approx(dict(one)) and torch.equal(merged.per_image["mean"], one.per_image["mean"])


def test_a_state_is_declared_with_a_known_reduction_and_a_fitting_default():
    m = measure  # noqa: F841 (the host is importable beside the contract)

    class Bad(Metric):
        def update(self, *a):
            pass

        def compute(self):
            return {}

    with pytest.raises(ValueError, match="reduce must be one of sum, max, min, cat"):
        Bad().add_state("x", torch.zeros(()), "mean")
    with pytest.raises(ValueError, match=r"no rows \(\[0, ...\]\) for 'cat'"):
        Bad().add_state("x", torch.zeros(3), "cat")
    with pytest.raises(ValueError, match="must be a tensor"):
        Bad().add_state("x", 0.0)


def test_compute_gives_one_result_and_a_plain_dict_still_counts_as_values():
    class Old(Metric):  # a metric written before MetricResult: its optional methods are still read
        better = {"v": "higher"}

        def update(self, *a):
            pass

        def compute(self):
            return {"v": 1.0}

        def flags(self):
            return {"v": "careful"}

        def per_image_values(self):
            return {"v": torch.ones(8)}

    class New(Metric):
        def update(self, *a):
            pass

        def compute(self):
            return MetricResult(values={"w": 2.0}, intervals={"w": (1.5, 2.5)}, not_measured={"x": "why"})

    unavailable = {}
    values, intervals, better, flags, pictures = measure.compute({"old": Old(), "new": New()}, unavailable)
    assert values == {"v": 1.0, "w": 2.0} and flags == {"v": "careful"} and better == {"v": "higher"}
    assert intervals == {"v": [1.0, 1.0], "w": [1.5, 2.5]} and unavailable == {"x": "why"} and pictures == {}
