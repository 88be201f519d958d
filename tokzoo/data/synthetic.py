"""``synthetic``: random smooth images generated on the fly, for throughput runs.

No files, no decoding cost: sample ``i`` is band-limited colour noise (a few
octaves of random low-resolution noise upsampled bilinearly) with a random
class label and the caption ``"a synthetic image of class {label}"``. Numbers
measured on it say how fast a model trains or encodes, nothing about quality.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from tokzoo.data import split_index
from tokzoo.sample import ImageDataset


class SyntheticDataset(ImageDataset):
    def __init__(self, split: str = "train", resolution: int = 256, train_size: int = 100_000,
                 val_size: int = 10_000, num_classes: int = 10, seed: int = 0):
        self.split_seed = split_index("synthetic", split)
        self.split, self.resolution, self.seed = split, resolution, seed
        self.size = train_size if split == "train" else val_size
        self.num_classes = num_classes
        self.classes = tuple(f"class {k}" for k in range(num_classes))
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed((self.seed * 3 + self.split_seed) * 1_000_003 + index)
        label = int(torch.randint(0, self.num_classes, (1,), generator=g))
        img = torch.zeros(1, 3, self.resolution, self.resolution)
        for octave in (4, 8, 16, 32):
            noise = torch.rand(1, 3, octave, octave, generator=g)
            img += F.interpolate(noise, size=self.resolution, mode="bilinear", align_corners=False) * (4 / octave)
        img = (img - img.amin()) / (img.amax() - img.amin() + 1e-6)
        # quantise like a decoded 8-bit image, so the protocol's uint8 metrics see what the model saw
        img = (img * 255).round() / 255
        return {"image": img[0], "label": label, "caption": f"a synthetic image of class {label}", "index": index}

    def fingerprint(self) -> str:
        return f"synthetic:v1:seed={self.seed}:split={self.split}:n={self.size}:res={self.resolution}"
