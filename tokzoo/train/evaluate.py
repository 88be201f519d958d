"""The trainer's default evaluation: PSNR of reconstructions of held-out images
(uint8, data range 255, as bench measures it) and a picture of the first ones."""
from __future__ import annotations

from pathlib import Path

import torch

from tokzoo.data import collate
from tokzoo.data.preprocess import to_uint8
from tokzoo.measures import psnr_per_image


@torch.no_grad()
def reconstruction_psnr(tokenizer, val_set, images: int, batch_size: int, device,
                        samples_png: Path | None = None) -> dict[str, float]:
    """``{"eval/psnr": mean}`` over the first ``images`` of ``val_set``; with
    ``samples_png``, originals over reconstructions of the first eight."""
    n = min(images, len(val_set))
    was = tokenizer.training
    tokenizer.eval()
    psnr_sum, count, first = 0.0, 0, None
    for start in range(0, n, batch_size):
        batch = collate([val_set[i] for i in range(start, min(n, start + batch_size))])
        if "image" not in batch:
            continue
        x = batch["image"].to(device)
        r = tokenizer.reconstruct(x)
        psnr_sum += float(psnr_per_image(to_uint8(x), to_uint8(r)).sum())
        count += len(x)
        if first is None:
            first = (x[:8].cpu(), r[:8].cpu())
    tokenizer.train(was)
    if first is not None and samples_png is not None:
        from torchvision.utils import save_image

        samples_png.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat(first), samples_png, nrow=len(first[0]))
    return {"eval/psnr": psnr_sum / max(1, count)}
