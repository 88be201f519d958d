"""Reading image files robustly.

Every mode PIL can open is converted to 8-bit RGB correctly (16-bit and
32-bit integer grayscale are rescaled, CMYK and palette images converted,
alpha composited on white). Files that cannot be decoded, or whose size is
beyond :data:`MAX_PIXELS` / :data:`MAX_ASPECT` (checked from the header,
before decoding), raise :class:`BadImage`, which datasets turn into counted,
visible skips.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: the largest image read (pixels; 134 megapixels, about 400 MB decoded) and the most elongated (longer
#: side / shorter side): beyond them the file is skipped as unreadable before it is decoded, since the
#: decode or the preprocessing's resize of the shorter side would allocate without bound (a 2 KB PNG of
#: 1 x 1,000,000 pixels asks the resize for gigabytes); a centre crop of a 16:1 strip shows almost none of it
MAX_PIXELS, MAX_ASPECT = 1 << 27, 16

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


class BadImage(Exception):
    """A file that is not a decodable image; the message says why."""


def _high_bit_gray_to_rgb(img: Image.Image) -> Image.Image:
    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16") or arr.max() > 255:
        maxval = 65535.0 if arr.max() <= 65535 else float(arr.max())
        arr = arr / maxval * 255.0
    arr8 = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr8, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return _high_bit_gray_to_rgb(img)
    if img.mode == "F":
        arr = np.asarray(img)
        hi = arr.max() if arr.max() > 1.0 else 1.0
        return Image.fromarray(np.clip(arr / hi * 255, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, P


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB, or raise :class:`BadImage`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                if min(w, h) < 1 or w * h > MAX_PIXELS:
                    raise BadImage(f"{w}x{h} pixels: outside 1..{MAX_PIXELS:,} pixels, not decoded")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise BadImage(f"{w}x{h} pixels: more elongated than {MAX_ASPECT}:1, not decoded")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))  # a phone photo's EXIF orientation, applied
    except UnidentifiedImageError:
        raise BadImage("not an image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImage(f"cannot decode ({msg})") from None
