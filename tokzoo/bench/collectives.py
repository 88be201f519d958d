"""Combining the metrics' declared states across the processes of a
``torchrun`` bench, on the device the states live on (NCCL takes no CPU
tensor). :func:`tokzoo.metric.merge_shards` is the same combination over
shards held in one process."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokzoo.metric import Metric

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


class Collectives:
    """The collectives the host reduces with: ``torch.distributed`` on its
    default process group. A tensor is reduced where it lives; a CPU tensor
    under a backend that takes none (NCCL) travels to ``device`` and back (a
    metric written before declared states keeps working)."""

    def __init__(self, world_size: int, device: Any = "cpu", dist: Any = None):
        if dist is None:
            import torch.distributed as dist

        self.dist, self.world_size, self.device = dist, world_size, torch.device(device)
        self.cpu_ok = dist.get_backend() == "gloo"

    def _here(self, t: Tensor) -> Tensor:
        return t if (t.device.type != "cpu" or self.cpu_ok) else t.to(self.device)

    def all_reduce(self, t: Tensor, op: str = "sum") -> None:
        """``t`` reduced over every process, in place (``op``: sum, max, min)."""
        moved = self._here(t)
        self.dist.all_reduce(moved, op=getattr(self.dist.ReduceOp, _OPS[op]))
        if moved is not t:
            t.copy_(moved)

    def all_gather_cat(self, t: Tensor) -> Tensor:
        """Every process's ``t`` (rows may differ in number), concatenated in rank order."""
        x = self._here(t.contiguous())
        rows = torch.tensor([len(x)], dtype=torch.long, device=x.device)
        counts = [torch.zeros_like(rows) for _ in range(self.world_size)]
        self.dist.all_gather(counts, rows)
        sizes = torch.cat(counts).tolist()  # one host read per gathered state, after the stream
        padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self.dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)

    def all_gather_object(self, parts: list, obj: Any) -> None:
        self.dist.all_gather_object(parts, obj)


def reduce_states(metric: Metric, coll) -> None:
    """Combine ``metric``'s declared states over the processes (``coll``: a
    :class:`Collectives` or a stand-in with the same methods), then let the
    metric combine what it did not declare (:meth:`Metric.reduce`)."""
    for name, how in metric.declared_states().items():
        if how == "cat":
            metric.state[name] = [coll.all_gather_cat(metric.cat_state(name))]
        else:
            coll.all_reduce(metric.state[name], how)
    metric.reduce(lambda t: coll.all_reduce(t, "sum"), coll.all_gather_object, coll.world_size)
