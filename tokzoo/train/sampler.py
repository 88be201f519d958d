"""The data order: deterministic in the step, so a resumed run sees the same
batches; the loader that feeds it and the copy of a batch to the device."""
from __future__ import annotations

from typing import Iterator

import torch

from tokzoo.data import collate


class StepBatches(torch.utils.data.Sampler):
    """Yields index lists for steps ``start, start+1, ...``: epoch ``e`` is a
    permutation seeded by ``(seed, e)``; rank ``r`` takes its slice of each
    global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int, world: int):
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start_step, total_steps
        self.rank, self.world = rank, world
        self.global_bs = batch_size * world
        self.per_epoch = max(1, n // self.global_bs)

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=g), epoch
            chunk = perm[k * self.global_bs:(k + 1) * self.global_bs]
            if len(chunk) < self.global_bs:  # tiny datasets: wrap around
                chunk = perm[torch.arange(k * self.global_bs, (k + 1) * self.global_bs) % self.n]
            yield chunk[self.rank * self.bs:(self.rank + 1) * self.bs].tolist()


def step_loader(dataset, sampler: StepBatches, workers: int, device: torch.device, seed: int) -> Iterator[dict]:
    """Batches of ``sampler`` decoded in ``workers`` processes (the next ones while a step
    runs), in pinned memory when they go to a GPU."""
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                         pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                                         generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def to_device(batch: dict, device: torch.device, memory_format=torch.contiguous_format, **extra) -> dict:
    """The loader's batch with its tensors on ``device`` (copied from pinned memory
    without waiting, images in ``memory_format``) and ``extra`` keys; ``batch["host"]``
    keeps the loader's own, for what a recipe reads on the host (captions from labels)."""
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    out["image"] = out["image"].contiguous(memory_format=memory_format)
    out.update(extra, host=batch)
    return out
