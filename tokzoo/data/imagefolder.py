"""``imagefolder``: a folder of images, read recursively.

- Splits: if the folder has ``train/`` and ``val/`` sub-folders they are the
  splits. Otherwise the whole folder is the data of whichever split is asked
  for (``--data imagefolder:/data/imagenet/val`` measures every image in it),
  unless ``val_fraction > 0`` holds that fraction out: an image goes to
  ``val`` when a hash of its relative path falls below it (deterministic,
  stable when files are added).
- Order: images are listed in a fixed pseudo-random order (a hash of each
  relative path), not sorted: the first N (``tokzoo bench --num-images N``,
  the probe's train images) are a sample of every class, not the first
  classes of a class-sorted folder, and adding files does not reorder the rest.
- Labels: the first sub-folder under the split root names the class (sorted,
  numbered from 0; with ``train/`` and ``val/`` the classes of both, so a
  class numbers the same in either split); images directly in the root get
  label -1.
- A labels file (``labels=FILE``, relative to the folder or absolute) names
  the class of images that sit directly in a split (ImageNet's flat ``val/``
  as the Kaggle download lays it out, with ``LOC_val_solution.csv``): one
  line per image, ``image,class`` (comma, tab or spaces), the image by its
  relative path, file name or file name without extension, the class by the
  first word of the second field (a folder name of ``train/``, e.g. a wnid);
  a first line of column names (words only: ``ImageId,PredictionString``)
  is a header; a byte-order mark and CRLF line ends are read as nothing.
  It labels the images directly in a split, never one in a class folder
  (that one has its folder's class). Where there are class folders, every
  class the file names must be one of them (else an error naming it: never
  a class of its own); without folders its classes are the classes.
- Attributes (the ``vqa-probe``'s answers): ``class``, the class name, for
  every labelled image.
- Captions: optional ``captions.jsonl`` in the split root or the folder root,
  one ``{"file": relative/path.jpg, "caption": "..."}`` per line.
- Unreadable files are skipped with a counted warning, never a crash.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from tokzoo.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb
from tokzoo.data.preprocess import center_crop_uint8, to_tensor
from tokzoo.errors import DataError
from tokzoo.textsafe import console as esc
from tokzoo.sample import ImageDataset


def _read_captions(files: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in files:
        if not f.is_file():
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[str(row["file"])] = str(row["caption"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{f}:{n}: each line must be a JSON object with 'file' and 'caption'") from None
    return out


def _read_labels(file: Path) -> dict[str, str]:
    """``{image key: class name}`` from a labels file (see the module's docstring)."""
    out: dict[str, str] = {}
    try:
        text = file.read_text(encoding="utf-8-sig", errors="replace")  # a byte-order mark is not a column name
    except OSError as exc:
        raise DataError(f"imagefolder: cannot read the labels file {file}: {exc.strerror}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    for n, line in lines:
        fields = line.split(",", 1) if "," in line else line.split(None, 1)
        if n == lines[0][0] and len(fields) == 2 and all(re.fullmatch(r"[A-Za-z][A-Za-z_ ]*", f.strip())
                                                         for f in fields):
            continue  # a header of column names (ImageId,PredictionString)
        if len(fields) < 2 or not fields[1].split():
            raise DataError(f"{file}:{n}: each line must be 'image,class' (got '{line[:60]}')")
        out[fields[0].strip()] = fields[1].split()[0]
    return out


class ImageFolderDataset(ImageDataset):
    """Samples ``{"image": [3,R,R] in [0,1], "label", "caption", "index"}``; a bad
    file yields ``None`` (dropped and counted by :func:`tokzoo.data.collate`)."""

    def __init__(self, split: str = "train", path: str = "", resolution: int = 256,
                 val_fraction: float = 0.0, captions: str = "captions.jsonl", labels: str = ""):
        root = Path(path).expanduser()
        if not path or not root.is_dir():
            raise DataError(f"imagefolder: '{path}' is not a folder (give data.path=/path/to/images)")
        self.resolution, self.split = resolution, split
        split_root = root
        #: True when every split asked for is the same images (no held-out split): bench's probe
        #: then trains on images it does not measure
        self.same_for_every_split = False
        if (root / "train").is_dir() and (root / "val").is_dir():
            split_root = root / split
            if not split_root.is_dir():
                raise DataError(f"imagefolder: {root} has train/ and val/ but no {split}/")
            files = self._scan(split_root)
        else:
            files = self._scan(root)
            if val_fraction > 0:
                files = [f for f in files if self._in_split(f.relative_to(root), split, val_fraction)]
            else:
                self.same_for_every_split = True
        if not files:
            raise DataError(f"imagefolder: no images for split '{split}' under {split_root} "
                            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.root = split_root
        files.sort(key=lambda f: self._order_key(f.relative_to(split_root)))
        rel = [f.relative_to(split_root) for f in files]
        named, listed = self._labels_file(root, labels, rel) if labels else ({}, set())
        class_names = {r.parts[0] for r in rel if len(r.parts) > 1}
        if split_root != root:  # train/ and val/: one numbering for both (every folder of either)
            class_names = self._class_folders(root / "train") | self._class_folders(root / "val")
        phantom = sorted(listed - class_names) if class_names else []
        if phantom:  # a class the folders do not have would become a class of its own
            raise DataError(f"imagefolder: the labels file {labels} names {len(phantom)} class(es) that no class "
                            f"folder has ({', '.join(repr(c) for c in phantom[:3])}"
                            f"{', ...' if len(phantom) > 3 else ''}); its classes must be folder names")
        class_names = sorted(class_names | listed)  # the labels file's classes count in both splits
        self.classes = tuple(class_names)
        self.attributes = {"class": self.classes} if self.classes else {}
        self.num_classes = len(class_names)
        index = {c: i for i, c in enumerate(class_names)}
        self.files = files
        self.labels = [index[named[r]] if r in named else index[r.parts[0]] if len(r.parts) > 1 else -1
                       for r in rel]
        caps = _read_captions([root / captions, split_root / captions])
        self.captions = [caps.get(r.as_posix(), caps.get(f.relative_to(root).as_posix(), "")) for r, f in zip(rel, files)]
        if self.num_classes:
            self.captions = [c or f"a photo of a {self.classes[l].replace('_', ' ')}" if l >= 0 else c
                             for c, l in zip(self.captions, self.labels)]

    def _scan(self, root: Path) -> list[Path]:
        """Every image under ``root``; folders that cannot be listed are counted and reported."""
        import os

        unreadable: list[str] = []
        found = []
        for folder, _, names in os.walk(root, onerror=lambda e: unreadable.append(str(e.filename))):
            found += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
        if unreadable:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]warning:[/] {len(unreadable)} folder(s) under {esc(root)} could "
                                       f"not be read and were skipped: {esc(', '.join(unreadable[:3]))}",
                                       highlight=False)
        self.unreadable_folders = unreadable
        return sorted(p for p in found if p.is_file())

    @staticmethod
    def _labels_file(root: Path, labels: str, rel: list[Path]) -> tuple[dict[Path, str], set[str]]:
        """``{relative path: class}`` for this split's images named in the labels file,
        and every class the file names."""
        file = Path(labels).expanduser()
        file = file if file.is_absolute() else root / file
        if not file.is_file():
            raise DataError(f"imagefolder: labels file {file} does not exist (one 'image,class' line per image)")
        table = _read_labels(file)
        out: dict[Path, str] = {}
        for r in rel:
            if len(r.parts) > 1:  # an image in a class folder has its folder's class; the file labels the flat ones
                continue
            for key in (r.as_posix(), r.name, r.stem):
                if key in table:
                    out[r] = table[key]
                    break
        flat = sum(len(r.parts) == 1 for r in rel)
        if flat and not out:
            first = next(iter(table), "")
            raise DataError(f"imagefolder: none of the {len(table)} lines of {file} names one of the {flat} images "
                            f"here (first line names '{first}'; give each image by its relative path, file name, "
                            "or file name without extension)")
        return out, set(table.values())

    @staticmethod
    def _order_key(rel: Path) -> bytes:
        return hashlib.sha1(rel.as_posix().encode("utf-8", "surrogateescape")).digest()

    @staticmethod
    def _class_folders(root: Path) -> set[str]:
        """A split's class folders (a listing, not a walk)."""
        import os

        try:
            return {e.name for e in os.scandir(root) if e.is_dir()}
        except OSError:
            return set()

    @staticmethod
    def _in_split(rel: Path, split: str, val_fraction: float) -> bool:
        h = int(hashlib.sha1(rel.as_posix().encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) / 0xFFFFFFFF
        return (h < val_fraction) == (split != "train")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            img = load_rgb(path)
        except BadImage as exc:
            return {"skipped": f"{path}: {exc}"}
        arr = center_crop_uint8(img, self.resolution)
        label = self.labels[index]
        sample = {"image": to_tensor(arr), "label": label, "caption": self.captions[index], "index": index}
        if label >= 0:
            sample["attributes"] = {"class": self.classes[label]}
        return sample

    def fingerprint(self) -> str:
        """The files (name, size, modification time to the nanosecond) and every
        image's label and caption: a changed image or a corrected labels file
        changes it, so no cached or reused result outlives them."""
        h = hashlib.sha256()
        for f in self.files:
            st = f.stat()
            # file names in any encoding: undecodable bytes stay as surrogate escapes, hashed as their bytes
            h.update(f"{f.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        h.update(json.dumps([self.classes, self.labels, self.captions], default=str).encode("utf-8", "surrogateescape"))
        return f"imagefolder:{h.hexdigest()[:16]}:n={len(self.files)}:res={self.resolution}"
