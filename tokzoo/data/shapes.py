"""``shapes``: a procedural, download-free dataset with labels and captions.

Each image is one of 10 shape classes, drawn in one of 8 colours with a
contrasting outline at a random size, position and rotation, over a background that is either a random crop of
one of the colour photographs scikit-image ships inside its wheel (natural
image statistics) or a procedural texture (stripes, checks, gradients, noise).
Sample ``i`` of split ``s`` with seed ``k`` is always the same image, at any
resolution. Each sample carries its ``attributes`` (shape, colour, outline,
size, position, background: :data:`ATTRIBUTES`), the answers of the
``vqa-probe``'s questions.

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
from tokzoo.sample import ImageDataset

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


def _draw_shape(target: Image.Image, shape, cx, cy, r, rot, color, outline, bg: np.ndarray | None) -> None:
    """Draw ``shape`` on ``target``; the crescent's bite is the background ``bg``
    pasted back, or zeros when ``bg`` is None (drawing a mask)."""
    draw = ImageDraw.Draw(target)
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
        box = (int(ox - r * 0.85), int(oy - r * 0.85), int(ox + r * 0.85), int(oy + r * 0.85))
        bite = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
        ImageDraw.Draw(bite).ellipse([0, 0, bite.size[0] - 1, bite.size[1] - 1], fill=255)
        if bg is None:
            target.paste(0, box, bite)
        else:
            target.paste(Image.fromarray(bg).crop(box), box[:2], bite)


CAPTIONS = ("full", "object", "shape")

#: the shapes drawn without a contrasting outline
UNOUTLINED = ("cross", "ring", "crescent")
#: size: terciles of the drawn radius (uniform in 0.26..0.40 of the image), i.e. of the area relative to
#: the same shape's: independent of the shape (absolute area is not: circles are nearly always the largest)
SIZES, SIZE_EDGES = ("small", "medium", "large"), (0.26 + 0.14 / 3, 0.26 + 0.28 / 3)
#: position: the cell of the mask's centroid in a 3x3 grid whose middle row and column are the central
#: 0.5 +- CENTRE of the image, so that each holds about a third of the objects (the generator keeps objects
#: away from the edges: equal thirds would put 79 % of them in the middle cell)
CENTRE = 0.055
POSITIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
#: ``attributes`` of every sample: name -> its possible values
ATTRIBUTES = {"shape": CLASSES, "colour": tuple(COLORS), "outline": ("black", "white", "none"), "size": SIZES,
              "position": POSITIONS, "background": ("photo", "texture")}


def render(index: int, resolution: int = 32, seed: int = 0, split: str = "train",
           captions: str = "full") -> tuple[np.ndarray, int, str, dict[str, str]]:
    """Sample ``index`` -> (uint8 ``[H,W,3]`` image, class label, caption, attributes).

    ``captions``: ``full`` names size, colour, shape and background ("a large red
    star on a photo background"), ``object`` colour and shape ("a red star"),
    ``shape`` the class alone ("a star"). The image does not depend on it.
    ``attributes``: one value of each of :data:`ATTRIBUTES` (the sizes and
    positions are defined there)."""
    rng = np.random.default_rng([seed, SPLITS.get(split, 3), index])
    label = int(rng.integers(0, len(CLASSES)))
    color_name = list(COLORS)[rng.integers(0, len(COLORS))]
    big = max(64, resolution * 2)
    bg, bg_desc = _background(rng, big)
    img = Image.fromarray(bg)
    r = big * rng.uniform(0.26, 0.40)
    cx, cy = rng.uniform(r, big - r, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    color = COLORS[color_name]
    shape = CLASSES[label]
    outline = (0, 0, 0) if sum(color) > 360 else (255, 255, 255)
    _draw_shape(img, shape, cx, cy, r, rot, color, outline, bg)
    # the attributes, from a mask of the same drawing (no random draws: the image is unchanged)
    mask = Image.new("L", (big, big), 0)
    _draw_shape(mask, shape, cx, cy, r, rot, 255, 255, None)
    m = np.asarray(mask) > 127
    img = img.resize((resolution, resolution), Image.LANCZOS)
    size_word = "large" if r > big * 0.27 else "small"
    if captions == "full":
        caption = f"a {size_word} {color_name} {shape} on {bg_desc} background"
    elif captions == "object":
        caption = f"a {color_name} {shape}"
    else:
        caption = f"a {shape}"
    attributes = {
        "shape": shape, "colour": color_name,
        "outline": "none" if shape in UNOUTLINED else "black" if outline == (0, 0, 0) else "white",
        "size": SIZES[int(np.digitize(r / big, SIZE_EDGES))],
        "position": _position(np.argwhere(m).mean(0) + 0.5, big),
        "background": "photo" if bg_desc == "a photo" else "texture"}
    return np.asarray(img), label, caption, attributes


def _position(centroid: np.ndarray, big: int) -> str:
    row, col = (0 if c < 0.5 - CENTRE else 2 if c > 0.5 + CENTRE else 1 for c in centroid / big)
    return POSITIONS[3 * row + col]


class ShapesDataset(ImageDataset):
    """Procedural shapes; samples are ``{"image", "label", "caption", "index",
    "attributes"}``, images ``[3,H,W]`` float in ``[0,1]``."""

    classes = CLASSES
    attributes = ATTRIBUTES

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
        arr, label, caption, attributes = render(index, self.resolution, self.seed, self.split, self.captions)
        return {"image": to_tensor(arr), "label": label, "caption": caption, "index": index, "attributes": attributes}

    def fingerprint(self) -> str:
        return f"shapes:v2:seed={self.seed}:split={self.split}:n={self.size}:res={self.resolution}"
