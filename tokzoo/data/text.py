"""``text``: real words in real fonts, each word's box and transcription kept, for
the text-preservation probe (``tokzoo bench --metrics text-ocr``); and
``textfolder``: an image folder of the user's own with a ``words.json`` of word
boxes (the shape of IC13 / TextOCR annotations), so the same probe runs on real
text.

``text`` sample ``i`` of split ``s`` with seed ``k`` is always the same image:
words drawn from a word list a system package ships (Debian's ``wamerican``:
``/usr/share/dict/american-english``; or ``data.words=FILE``), alphabetic, 3 to
10 letters; a train / val split of the *words* (by a hash of the word), so a
probe never scores a word it trained on. Fonts: DejaVu and Liberation (Debian's
``fonts-dejavu-core``, ``fonts-liberation``), sans, serif and mono, regular and
bold. Word heights relative to the image are drawn evenly among TokBench's three
buckets ([0.02, 0.03), [0.03, 0.04), [0.04, 0.25]); a word lower than 6 pixels is
drawn in the large bucket instead (at 32 px, large words only). Backgrounds: flat,
a gradient, or one of the project's photographs faded toward a flat colour; the
text dark on light or light on dark. Label: the font family.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tokzoo.data import split_index
from tokzoo.data.preprocess import center_crop_uint8, to_tensor
from tokzoo.errors import DataError
from tokzoo.sample import ImageDataset

#: where a word list is looked for (Debian's wamerican), unless data.words= names one
WORD_LISTS = ("/usr/share/dict/american-english", "/usr/share/dict/words")
#: font family -> (regular, bold) file under a font folder (Debian: fonts-dejavu-core, fonts-liberation)
FONTS = {"dejavu-sans": ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf"),
         "dejavu-serif": ("dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSerif-Bold.ttf"),
         "dejavu-mono": ("dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"),
         "liberation-sans": ("liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf"),
         "liberation-serif": ("liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Bold.ttf"),
         "liberation-mono": ("liberation/LiberationMono-Regular.ttf", "liberation/LiberationMono-Bold.ttf")}
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/local/share/fonts", "/usr/share/fonts")
#: TokBench's word-size buckets: the box height relative to the image's
BUCKETS = {"small": (0.02, 0.03), "medium": (0.03, 0.04), "large": (0.04, 1.0)}
LARGEST = 0.25  # the tallest word drawn, relative to the image (a quarter of it)
MIN_PIXELS = 6  # a word lower than this is drawn in the large bucket
INSTALL = "apt install wamerican fonts-dejavu-core fonts-liberation"


def bucket_of(height: float, size: int) -> str:
    rel = height / size
    for name, (lo, hi) in BUCKETS.items():
        if lo <= rel < hi:
            return name
    return "small" if rel < BUCKETS["small"][0] else "large"


@functools.lru_cache(maxsize=4)
def read_words(path: str) -> tuple[tuple[str, ...], str]:
    """(alphabetic words of 3-10 letters, the list's SHA-256) of a word-list file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"text: cannot read the word list {path} ({exc.strerror}); {INSTALL}, or data.words=FILE")
    words = sorted({w for w in data.decode("utf-8", "replace").split() if re.fullmatch(r"[A-Za-z]{3,10}", w)})
    if len(words) < 100:
        raise DataError(f"text: the word list {path} has {len(words)} usable words (alphabetic, 3-10 letters); "
                        "give one of at least 100")
    return tuple(words), hashlib.sha256(data).hexdigest()


def find_word_list(words: str) -> str:
    if words:
        return str(Path(words).expanduser())
    for path in WORD_LISTS:
        if Path(path).is_file():
            return path
    raise DataError(f"text: no word list found ({', '.join(WORD_LISTS)}); {INSTALL}, or give data.words=FILE")


@functools.lru_cache(maxsize=1)
def find_fonts(extra: str = "") -> dict[str, tuple[str, str]]:
    """Font family -> (regular, bold) paths, for the families found (at least one, or an error)."""
    dirs = [extra] if extra else []
    dirs += [d for d in os.environ.get("TOKZOO_FONTS_DIR", "").split(os.pathsep) if d] + list(FONT_DIRS)
    found = {}
    for family, files in FONTS.items():
        for d in dirs:
            paths = [Path(d) / f for f in files]
            if all(p.is_file() for p in paths):
                found[family] = (str(paths[0]), str(paths[1]))
                break
    if not found:
        raise DataError(f"text: none of the fonts it draws with is installed ({', '.join(FONTS)}); {INSTALL}")
    return found


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, bool]:
    """(the background, its kind, whether it is light)."""
    light = bool(rng.random() < 0.6)
    base = rng.integers(200, 256, 3) if light else rng.integers(0, 60, 3)
    kind = ("flat", "gradient", "photo")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    img = np.ones((size, size, 3)) * base
    if kind == "gradient":
        other = np.clip(base + rng.integers(-50, 51, 3), 0, 255)
        t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
        img = base * (1 - t) + other * t * np.ones((size, size, 1))
    elif kind == "photo":
        from tokzoo.data.shapes import PHOTOS, _photo

        photo = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
        y, x = (int(rng.integers(0, photo.shape[i] - 256 + 1)) for i in (0, 1))
        crop = np.asarray(Image.fromarray(photo[y:y + 256, x:x + 256]).resize((size, size), Image.BICUBIC))
        img = 0.35 * crop + 0.65 * base  # faded toward the flat colour: the words stay legible
    return np.clip(img, 0, 255).astype(np.uint8), kind, light


def render(index: int, resolution: int, seed: int, split: str, words: tuple[str, ...],
           fonts: dict[str, tuple[str, str]]) -> tuple[np.ndarray, int, list[dict], dict[str, str]]:
    """Sample ``index`` -> (uint8 image, label, words [{"text", "box"}], attributes)."""
    rng = np.random.default_rng([seed, split_index("text", split), index])
    img_arr, kind, light = _background(rng, resolution)
    img = Image.fromarray(img_arr)
    draw = ImageDraw.Draw(img)
    families = sorted(fonts)
    family = families[int(rng.integers(len(families)))]
    bold = bool(rng.random() < 0.4)
    font_file = fonts[family][int(bold)]
    ink = tuple(int(v) for v in (rng.integers(0, 70, 3) if light else rng.integers(200, 256, 3)))
    count = int(rng.integers(1, 3)) if resolution < 64 else int(rng.integers(2, 6))
    placed: list[dict] = []
    for _ in range(count):
        word = words[int(rng.integers(len(words)))]
        lo, hi = list(BUCKETS.values())[int(rng.integers(3))]
        rel = rng.uniform(lo, min(hi, LARGEST))
        if rel * resolution < MIN_PIXELS:
            rel = rng.uniform(max(BUCKETS["large"][0], MIN_PIXELS / resolution),
                              max(LARGEST, 1.3 * MIN_PIXELS / resolution))
        target = rel * resolution
        font = ImageFont.truetype(font_file, max(4, round(target * 1.15)))
        x0, y0, x1, y1 = draw.textbbox((0, 0), word, font=font)
        w, h = x1 - x0, y1 - y0
        if w + 4 > resolution or h + 4 > resolution:
            continue
        for _try in range(20):
            x, y = int(rng.integers(2, resolution - w - 1)), int(rng.integers(2, resolution - h - 1))
            box = [x, y, x + w, y + h]
            if all(box[2] + 3 < b[0] or b[2] + 3 < box[0] or box[3] + 3 < b[1] or b[3] + 3 < box[1]
                   for b in (p["box"] for p in placed)):
                draw.text((x - x0, y - y0), word, font=font, fill=ink)
                placed.append({"text": word, "box": box})
                break
    attributes = {"font": family, "weight": "bold" if bold else "regular", "background": kind,
                  "ink": "dark" if light else "light"}
    return np.asarray(img), families.index(family), placed, attributes


class TextDataset(ImageDataset):
    """Samples ``{"image", "label", "caption", "index", "attributes", "words"}``; ``words``:
    ``[{"text": str, "box": [x0, y0, x1, y1]}]`` in the image's pixels."""

    def __init__(self, split: str = "train", resolution: int = 256, train_size: int = 4096, val_size: int = 512,
                 seed: int = 0, words: str = "", fonts: str = ""):
        split_index("text", split)
        self.split, self.resolution, self.seed = split, resolution, seed
        self.size = train_size if split == "train" else val_size
        self.word_list = find_word_list(words)
        every, self.words_sha256 = read_words(self.word_list)
        held = split != "train"  # a tenth of the words (by their hash) only in val/test, the rest only in train
        self.words = tuple(w for w in every if (zlib.crc32(w.encode()) % 10 == 0) == held)
        self.fonts = find_fonts(fonts)
        self.classes = tuple(sorted(self.fonts))
        self.num_classes = len(self.classes)
        self.attributes = {"font": self.classes, "weight": ("regular", "bold"),
                           "background": ("flat", "gradient", "photo"), "ink": ("dark", "light")}
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        arr, label, words, attributes = render(index, self.resolution, self.seed, self.split, self.words, self.fonts)
        return {"image": to_tensor(arr), "label": label, "caption": " ".join(w["text"] for w in words),
                "index": index, "attributes": attributes, "words": words}

    def fingerprint(self) -> str:
        fonts = hashlib.sha256(json.dumps(self.fonts, sort_keys=True).encode()).hexdigest()[:8]
        return (f"text:v1:seed={self.seed}:split={self.split}:n={self.size}:res={self.resolution}:"
                f"words={self.words_sha256[:12]}:fonts={fonts}")


def _box(entry, where: str) -> list[float]:
    """[x0, y0, x1, y1] of an annotation: "box" (4 numbers) or "points" (a polygon: its bounding box)."""
    if isinstance(entry.get("box"), list) and len(entry["box"]) == 4:
        box = entry["box"]
    elif isinstance(entry.get("points"), list) and len(entry["points"]) >= 6 and len(entry["points"]) % 2 == 0:
        xs, ys = entry["points"][0::2], entry["points"][1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        raise DataError(f"textfolder: {where}: a word needs \"box\": [x0, y0, x1, y1] or \"points\": [x, y, ...]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box) \
            or box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"textfolder: {where}: box {box!r:.80} is not x0 < x1, y0 < y1 numbers")
    return [float(v) for v in box]


class TextFolderDataset(ImageDataset):
    """An image folder with ``words.json`` (``{"relative/path.jpg": [{"text": "...", "box": [x0, y0,
    x1, y1]}, ...]}``, boxes in the file's pixels, or ``"points"`` polygons): every sample carries
    its words, their boxes moved as the protocol's centre crop moves the pixels; a word the crop
    cuts is left out. Image-folder options apply (train/ and val/, ``val_fraction``)."""

    def __init__(self, split: str = "train", path: str = "", resolution: int = 256, val_fraction: float = 0.0,
                 words: str = "words.json"):
        from tokzoo.data.imagefolder import ImageFolderDataset

        self.inner = ImageFolderDataset(split, path, resolution, val_fraction)
        self.resolution, self.split = resolution, split
        self.same_for_every_split = self.inner.same_for_every_split
        file = Path(words).expanduser()
        file = file if file.is_absolute() else Path(path).expanduser() / file
        try:
            table = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"textfolder: cannot read {file} ({exc.strerror}): the word boxes of each image") from None
        except ValueError as exc:
            raise DataError(f"textfolder: {file} is not JSON ({exc})") from None
        if not isinstance(table, dict):
            raise DataError(f"textfolder: {file} must map each image's relative path to its list of words")
        self.table, self.file = table, file
        self.num_classes, self.classes, self.attributes = 0, (), {}
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def _words_of(self, index: int, size: tuple[int, int]) -> list[dict]:
        f = self.inner.files[index]
        rel = f.relative_to(self.inner.root).as_posix()
        entries = self.table.get(rel, self.table.get(f.name, []))
        if not isinstance(entries, list):
            raise DataError(f"textfolder: {self.file}: the words of {rel!r} are not a list")
        w, h = size
        scale = self.resolution / min(w, h)  # the protocol's resize (its halvings compose to the same scale)
        left = (max(self.resolution, round(w * scale)) - self.resolution) // 2
        top = (max(self.resolution, round(h * scale)) - self.resolution) // 2
        out = []
        for k, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("text"), str):
                raise DataError(f"textfolder: {self.file}: word {k} of {rel!r} needs \"text\"")
            x0, y0, x1, y1 = _box(e, f"word {k} of {rel!r}")
            box = [round(x0 * scale) - left, round(y0 * scale) - top, round(x1 * scale) - left,
                   round(y1 * scale) - top]
            if box[0] >= 0 and box[1] >= 0 and box[2] <= self.resolution and box[3] <= self.resolution \
                    and e["text"].strip():
                out.append({"text": e["text"], "box": box})
        return out

    def __getitem__(self, index: int) -> dict:
        from tokzoo.data.images import BadImage, load_rgb

        path = self.inner.files[index]
        try:
            img = load_rgb(path)
        except BadImage as exc:
            return {"skipped": f"{path}: {exc}"}
        return {"image": to_tensor(center_crop_uint8(img, self.resolution)), "label": -1, "caption": "",
                "index": index, "words": self._words_of(index, img.size)}

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.file.read_bytes()).hexdigest()[:12]
        return f"textfolder:{self.inner.fingerprint()}:words={h}"
