"""The generation judge: a small classifier trained on a dataset's real train
images, for machines without InceptionV3 weights and for any dataset.

It answers two questions about generated images: does a sample show the
class it was asked for (``gen_class_acc``), and how far is the distribution
of samples from the real images in the judge's own features (``gfd_judge``,
a Fréchet distance that is specific to this dataset and judge, never to be
compared with a literature gFID). Its accuracy on the real measured images is
the ceiling ``gen_class_acc`` can reach, recorded beside it.

The recipe (:data:`JUDGE_PROTOCOL`) is fixed and recorded; a trained judge is
cached by the train split's fingerprint, its resolution, class count and the
recipe (``$TOKZOO_CACHE_DIR/judge/``), like rFID's reference statistics.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.weights import cache_dir, cache_folder

#: the judge's architecture and training budget (part of the AR probe's protocol)
JUDGE_PROTOCOL = {"name": "judge", "version": 1,
                  "arch": "conv3x3 32-64(s2)-128(s2)-128(s2), GELU, GroupNorm, global mean -> 128-d features -> linear",
                  "train": "AdamW lr 2e-3 wd 0.05, batch 64, cosine, hflip-free, uint8 -> [0,1]", "seed": 0}
FEATURE_DIMS = 128


class Judge(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        layers, c = [], 3
        for out, stride in ((32, 1), (64, 2), (128, 2), (128, 2)):
            layers += [nn.Conv2d(c, out, 3, stride, 1), nn.GroupNorm(8, out), nn.GELU()]
            c = out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(FEATURE_DIMS, num_classes)

    def features(self, images_u8: Tensor) -> Tensor:
        """uint8 ``[B,3,H,W]`` -> features ``[B, 128]``."""
        x = images_u8.float() / 255 * 2 - 1
        return self.body(x).mean(dim=(2, 3))

    def forward(self, images_u8: Tensor) -> Tensor:
        return self.fc(self.features(images_u8))


def cache_key(train_fingerprint: str, resolution: int, num_classes: int, steps: int, images: int) -> str:
    blob = json.dumps([train_fingerprint, resolution, num_classes, steps, images, JUDGE_PROTOCOL])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def train_judge(images: Callable[[int], tuple[Tensor, Tensor]], num_classes: int, steps: int,
                device, on_step: Callable[[int], None] | None = None) -> Judge:
    """A judge trained for ``steps``; ``images(i)`` gives the (uint8 images,
    labels) of batch ``i`` of 64, drawn by the caller."""
    torch.manual_seed(JUDGE_PROTOCOL["seed"])
    judge = Judge(num_classes).to(device)
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    judge.train()
    for s in range(steps):
        x, y = images(s)
        loss = F.cross_entropy(judge(x.to(device)), y.to(device).long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step:
            on_step(s)
    return judge.eval()


def load_cached(key: str, num_classes: int, device) -> Judge | None:
    path = cache_folder("judge") / f"{key}.safetensors"  # checked writable before a judge is trained
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        judge = Judge(num_classes)
        judge.load_state_dict(load_file(str(path)))
        return judge.to(device).eval()
    except Exception:  # a damaged cache file: trained again
        return None


def save_cached(key: str, judge: Judge) -> None:
    from safetensors.torch import save_file

    path = cache_dir() / "judge" / f"{key}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in judge.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
