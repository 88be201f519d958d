"""``shapes``: a procedural, download-free dataset with labels and captions.

Each image is one of 10 shape classes, drawn in one of 8 colours with a
contrasting outline at a random size, position and rotation, over a background that is either a random crop of
one of the colour photographs scikit-image ships inside its wheel (natural
image statistics) or a procedural texture (stripes, checks, gradients, noise).
Sample ``i`` of split ``s`` with seed ``k`` is always the same image, at any
resolution.

v2 (current): classes chosen to stay distinguishable at 32x32 (v1's pentagon
and hexagon were indistinguishable from circles at that size), larger shapes
and a contrasting outline, so a network trained for a few CPU minutes can
tell the classes apart.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tokzoo.data import SPLITS, split_index
from tokzoo.data.preprocess import to_tensor

CLASSES = ("circle", "square", "triangle", "diamond", "arrow", "bar", "star", "cross", "ring", "crescent")
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (240, 220, 40),
    "purple": (150, 60, 200), "orange": (250, 140, 20), "white": (245, 245, 245), "black": (20, 20, 20),
}
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "color.png", "ihc.png")
TEXTURES = ("brick.png", "grass.png", "gravel.png")


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    img = Image.open(path)
    img = img.convert("RGB")
    scale = 256 / min(img.size)
    img = img.resize((max(256, round(img.size[0] * scale)), max(256, round(img.size[1] * scale))), Image.BICUBIC)
    return np.asarray(img)


def _regular(cx, cy, r, n, rot):
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _star(cx, cy, r, rot):
    return [(cx + (r if k % 2 == 0 else r * 0.45) * math.cos(rot + math.pi * k / 5),
             cy + (r if k % 2 == 0 else r * 0.45) * math.sin(rot + math.pi * k / 5)) for k in range(10)]


def _turn(pts, cx, cy, r, rot):
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    kind = rng.integers(0, 3)
    if kind == 0:
        name = PHOTOS[rng.integers(0, len(PHOTOS))]
        photo = _photo(name)
        crop = int(rng.integers(96, 256))
        y = int(rng.integers(0, photo.shape[0] - crop + 1))
        x = int(rng.integers(0, photo.shape[1] - crop + 1))
        patch = Image.fromarray(photo[y:y + crop, x:x + crop]).resize((size, size), Image.BICUBIC)
        return np.asarray(patch), "a photo"
    if kind == 1:
        name = TEXTURES[rng.integers(0, len(TEXTURES))]
        photo = _photo(name).astype(np.float32)
        crop = int(rng.integers(64, 256))
        y = int(rng.integers(0, photo.shape[0] - crop + 1))
        x = int(rng.integers(0, photo.shape[1] - crop + 1))
        tint = rng.uniform(0.4, 1.0, size=3)
        patch = np.clip(photo[y:y + crop, x:x + crop] * tint, 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(patch).resize((size, size), Image.BICUBIC)), "a " + name.split(".")[0] + " texture"
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    freq, ang = rng.uniform(2, 10), rng.uniform(0, math.pi)
    wave = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)))
    style = rng.integers(0, 3)
    if style == 0:
        t, desc = wave, "striped"
    elif style == 1:
        t, desc = ((np.floor(xx * freq) + np.floor(yy * freq)) % 2), "checked"
    else:
        t, desc = xx * math.cos(ang) + yy * math.sin(ang), "gradient"
    t = np.clip(t, 0, 1)[..., None]
    img = c1 * (1 - t) + c2 * t + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), f"a {desc}"


CAPTIONS = ("full", "object", "shape")


def render(index: int, resolution: int = 32, seed: int = 0, split: str = "train",
           captions: str = "full") -> tuple[np.ndarray, int, str]:
    """Sample ``index`` -> (uint8 ``[H,W,3]`` image, class label, caption).

    ``captions``: ``full`` names size, colour, shape and background ("a large red
    star on a photo background"), ``object`` colour and shape ("a red star"),
    ``shape`` the class alone ("a star"). The image does not depend on it."""
    rng = np.random.default_rng([seed, SPLITS.get(split, 3), index])
    label = int(rng.integers(0, len(CLASSES)))
    color_name = list(COLORS)[rng.integers(0, len(COLORS))]
    big = max(64, resolution * 2)
    bg, bg_desc = _background(rng, big)
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    r = big * rng.uniform(0.26, 0.40)
    cx, cy = rng.uniform(r, big - r, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    color = COLORS[color_name]
    shape = CLASSES[label]
    outline = (0, 0, 0) if sum(color) > 360 else (255, 255, 255)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=outline, width=3)
    elif shape == "square":
        draw.polygon(_regular(cx, cy, r, 4, rot), fill=color, outline=outline, width=3)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy, r, 3, rot), fill=color, outline=outline, width=3)
    elif shape == "diamond":
        draw.polygon(_turn([(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)], cx, cy, r, rot), fill=color, outline=outline, width=3)
    elif shape == "arrow":
        pts = [(0.0, -1.0), (0.75, -0.1), (0.3, -0.1), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.1), (-0.75, -0.1)]
        draw.polygon(_turn(pts, cx, cy, r, rot), fill=color, outline=outline, width=3)
    elif shape == "bar":
        pts = [(-1.0, -0.28), (1.0, -0.28), (1.0, 0.28), (-1.0, 0.28)]
        draw.polygon(_turn(pts, cx, cy, r, rot), fill=color, outline=outline, width=3)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r, rot), fill=color, outline=outline, width=3)
    elif shape == "cross":
        t = r * 0.35
        for a in (rot, rot + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy, dx
            draw.polygon([(cx + dx * r + px * t, cy + dy * r + py * t), (cx + dx * r - px * t, cy + dy * r - py * t),
                          (cx - dx * r - px * t, cy - dy * r - py * t), (cx - dx * r + px * t, cy - dy * r + py * t)], fill=color)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(2, int(r * 0.35)))
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        ox, oy = cx + r * 0.5 * math.cos(rot), cy + r * 0.5 * math.sin(rot)
        patch = Image.fromarray(bg).crop((int(ox - r * 0.85), int(oy - r * 0.85), int(ox + r * 0.85), int(oy + r * 0.85)))
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).ellipse([0, 0, patch.size[0] - 1, patch.size[1] - 1], fill=255)
        img.paste(patch, (int(ox - r * 0.85), int(oy - r * 0.85)), mask)
    img = img.resize((resolution, resolution), Image.LANCZOS)
    size_word = "large" if r > big * 0.27 else "small"
    if captions == "full":
        caption = f"a {size_word} {color_name} {shape} on {bg_desc} background"
    elif captions == "object":
        caption = f"a {color_name} {shape}"
    else:
        caption = f"a {shape}"
    return np.asarray(img), label, caption


class ShapesDataset(torch.utils.data.Dataset):
    """Procedural shapes; samples are ``{"image", "label", "caption", "index"}``,
    images ``[3,H,W]`` float in ``[0,1]``."""

    classes = CLASSES

    def __init__(self, split: str = "train", resolution: int = 32, train_size: int = 4096,
                 val_size: int = 512, seed: int = 0, captions: str = "full"):
        from tokzoo.errors import ConfigError

        split_index("shapes", split)
        if captions not in CAPTIONS:
            raise ConfigError(f"shapes: captions must be one of {', '.join(CAPTIONS)}, not '{captions}'")
        self.split, self.resolution, self.seed, self.captions = split, resolution, seed, captions
        self.size = train_size if split == "train" else val_size
        self.num_classes = len(CLASSES)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        arr, label, caption = render(index, self.resolution, self.seed, self.split, self.captions)
        return {"image": to_tensor(arr), "label": label, "caption": caption, "index": index}

    def fingerprint(self) -> str:
        return f"shapes:v2:seed={self.seed}:split={self.split}:n={self.size}:res={self.resolution}"
