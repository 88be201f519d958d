"""The canonical preprocessing of the measurement protocol.

``adm-center-crop`` v1 (the ADM / LlamaGen convention): while the shorter side
is at least twice the target, halve the image with a box filter; then resize
so the shorter side equals the resolution with bicubic resampling; then take
the centre square crop. Output is uint8, as the images are measured.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

PREPROCESSING = {"name": "adm-center-crop", "version": 1}


def center_crop_uint8(image: Image.Image, resolution: int) -> np.ndarray:
    """RGB PIL image -> ``[resolution, resolution, 3]`` uint8 array."""
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(max(resolution, round(x * scale)) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - resolution) // 2
    left = (arr.shape[1] - resolution) // 2
    return arr[top: top + resolution, left: left + resolution]


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``[H,W,3]`` uint8 -> ``[3,H,W]`` float in ``[0,1]``."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0,1]`` -> uint8, rounded as a saved PNG would be."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)
