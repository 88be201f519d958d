"""``webdataset``: images in sharded tar files, the WebDataset layout.

A shard is a plain tar file whose members are grouped into samples by key:
``n01440764_10026.jpg``, ``n01440764_10026.cls`` and ``n01440764_10026.txt``
are one sample (key = the member path up to the first dot of its file name,
the WebDataset convention). Recognised parts:

- the image: the first of ``image_keys`` present (``jpg;jpeg;png;webp`` ...);
- the label: ``label_key`` (``cls``: the integer as text), else -1;
- the caption: ``caption_key`` (``txt``, UTF-8), else ``"a photo of a
  {class}"`` when class names are known, else empty;
- the attributes (the ``vqa-probe``'s answers): ``class`` (the class name
  when ``classes`` names it, else the label) and every key of a JSON object
  in ``attributes_key`` (``json``) whose value is a string, number or
  boolean (other values are left out; a part that is not a JSON object
  skips the sample, with the reason).

Shards: ``path`` is a folder (every ``*.tar`` in it, sorted), a glob
(``/data/imagenet/train-*.tar``) or a brace pattern
(``/data/imagenet/train-{000000..000127}.tar``). Splits: a folder with
``train/`` and ``val/`` sub-folders of shards uses them; ``val_path`` names the
val shards explicitly; ``val_fraction > 0`` holds out that fraction of the
samples by a hash of their key (deterministic). Otherwise ``path`` is the data
of whichever split is asked for: ``tokzoo bench --data webdataset
data.path=val-*.tar`` measures every sample of those shards (give a val
source when training, so the trainer's evaluation images are held out).
Samples keep the shards' order (WebDataset writers shuffle them):
``--num-images N`` measures the first N.
Class names, when wanted for captions, come from ``classes`` (a text file,
one name per line, line ``k`` naming label ``k``).

Reading: each shard's tar headers are indexed when the dataset is built (the
offset and size of every member; nothing is unpacked), then a sample is read
by seeking to its members. The dataset is therefore indexable: the
trainer's step-deterministic sampler splits every global batch across
torchrun ranks and data-loader workers without duplicates, and a resumed run
continues mid-epoch with exactly the samples it would have seen. Random order
across shards means random reads: right for local disks and network file
systems; shards on an object store are best copied to local disk first.

The index of a shard is kept in tokzoo's cache
(``$TOKZOO_CACHE_DIR/webdataset-index``, default ``~/.cache/tokzoo``) under
the shard's absolute path, size and modification time, so the next run, rank
or bench reads it back instead of walking the tar headers again (a walk of
ImageNet train costs about two minutes per process here:
benchmarks/results/webdataset_index.txt); a changed shard is indexed anew;
``index_cache=false`` neither reads nor writes the cache.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

import torch

from tokzoo.data.images import BadImage, load_rgb
from tokzoo.data.preprocess import center_crop_uint8, to_tensor
from tokzoo.errors import DataError
from tokzoo.sample import ImageDataset

_KEY = re.compile(r"^((?:.*/)?[^/]*?)\.([^/]*)$")  # WebDataset: key up to the first dot of the name


def expand_shards(pattern: str) -> list[Path]:
    """A folder, glob or brace pattern -> the shard files, sorted (brace order kept)."""
    p = Path(pattern).expanduser()
    if p.is_dir():
        return sorted(p.glob("*.tar"))
    from braceexpand import braceexpand

    if _brace_count(str(p)) > MAX_SHARDS:  # counted, not expanded: {00000000..99999999} is 10^8 names
        from tokzoo.errors import ConfigError

        raise ConfigError(f"data.path={pattern}: more than {MAX_SHARDS:,} shards; give the range the shards "
                          "have (train-{000000..000127}.tar)")
    out: list[Path] = []
    for item in braceexpand(str(p)):  # a generator: bounded here before a huge range fills memory
        if len(out) >= MAX_SHARDS:
            from tokzoo.errors import ConfigError

            raise ConfigError(f"data.path={pattern}: more than {MAX_SHARDS:,} shards; give the range the shards "
                              "have (train-{000000..000127}.tar)")
        if any(c in item for c in "*?["):
            out.extend(sorted(Path(m) for m in glob.glob(item)))
        else:
            out.append(Path(item))
    return out


def _brace_count(pattern: str) -> int:
    """An upper bound of the names a brace pattern expands to (ranges and lists multiplied)."""
    import re

    total = 1
    for inner in re.findall(r"\{([^{}]*)\}", pattern):
        numbers = re.fullmatch(r"(-?\d+)\.\.(-?\d+)(?:\.\.-?\d+)?", inner)
        letters = re.fullmatch(r"(\w)\.\.(\w)", inner)
        if numbers:
            total *= abs(int(numbers[2]) - int(numbers[1])) + 1
        elif letters:
            total *= abs(ord(letters[2]) - ord(letters[1])) + 1
        else:
            total *= inner.count(",") + 1
    return total


def index_shard(path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """``[(key, {ext: (offset, size)})]`` in the shard's order: consecutive
    members with one key form a sample (as WebDataset reads them)."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                match = _KEY.match(m.name)
                if not match:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = (m.offset_data, m.size)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"webdataset: cannot read shard {path}: {exc} "
                        "(shards must be uncompressed tar files)") from None
    return samples


INDEX_VERSION = 1  # of the cached index's layout


def _index_cache_file(path: Path) -> Path:
    from tokzoo.weights import cache_dir

    st = path.stat()
    key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{INDEX_VERSION}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]  # a path in any encoding
    return cache_dir() / "webdataset-index" / (digest + ".json")


def cached_index(path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """:func:`index_shard`, kept in tokzoo's cache under the shard's absolute
    path, size and mtime; an unreadable cache entry is rebuilt and an
    unwritable cache folder only costs the next run the walk."""
    try:
        cache = _index_cache_file(path)
    except OSError:
        return index_shard(path)  # the shard itself is unreadable: index_shard says so
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("version") == INDEX_VERSION and data.get("shard") == str(path.resolve()):
            return [(k, {ext: (int(o), int(n)) for ext, (o, n) in parts.items()}) for k, parts in data["samples"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    samples = index_shard(path)
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": INDEX_VERSION, "shard": str(path.resolve()), "samples": samples}, f,
                      separators=(",", ":"))
        os.replace(tmp, cache)  # atomic: ranks indexing the same shard at once never see half a file
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return samples


#: the largest label without a classes file (a label is a class index: a probe sizes its classifier by it,
#: so one stray label must not ask for a million classes; ImageNet-21k has 21,841)
MAX_LABEL = 1 << 16
#: the most shards a brace pattern or glob may name
MAX_SHARDS = 1_000_000


class WebDatasetDataset(ImageDataset):
    """Samples ``{"image", "label", "caption", "index"}`` from tar shards; a
    sample whose image is missing or undecodable yields ``{"skipped": ...}``."""

    def __init__(self, split: str = "train", path: str = "", resolution: int = 256, val_path: str = "",
                 val_fraction: float = 0.0, image_keys: str = "jpg;jpeg;png;webp;bmp;ppm",
                 label_key: str = "cls", caption_key: str = "txt", classes: str = "", index_cache: bool = True,
                 attributes_key: str = "json"):
        if not path:
            raise DataError("webdataset: give data.path=SHARDS (a folder of .tar files, a glob or "
                            "a brace pattern such as train-{000000..000127}.tar)")
        if split not in ("train", "val"):
            raise DataError(f"webdataset has splits ['train', 'val'], not '{split}'")
        root = Path(path).expanduser()
        by_hash = False
        if val_path:
            pattern = val_path if split == "val" else path
        elif root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir():
            pattern = str(root / split)
        else:
            pattern, by_hash = path, val_fraction > 0
        whole = not val_path and pattern == path and not by_hash  # no held-out split
        shards = expand_shards(pattern)
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise DataError(f"webdataset: shard {missing[0]} does not exist"
                            + (f" ({len(missing)} of {len(shards)} missing)" if len(missing) > 1 else ""))
        if not shards:
            raise DataError(f"webdataset: no .tar shards match '{pattern}'")
        self.split, self.resolution = split, resolution
        #: the same samples whichever split is asked for (no held-out split): bench's probe then
        #: trains on samples it does not measure
        self.same_for_every_split = whole
        self.image_keys = [k.strip().lower() for k in image_keys.split(";") if k.strip()]
        self.label_key, self.caption_key = label_key.lower(), caption_key.lower()
        self.attributes_key = attributes_key.lower()
        self.shards = shards
        # (shard number, key, parts) per sample; the per-shard index is built (or read from the cache) here
        self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        index = cached_index if index_cache else index_shard
        for s, shard in enumerate(shards):
            for key, parts in index(shard):
                if by_hash and not self._in_split(key, split, val_fraction):
                    continue
                self.samples.append((s, key, parts))
        if not self.samples:
            raise DataError(f"webdataset: no samples for split '{split}' in {len(shards)} shard(s) of '{pattern}'")
        self.classes: tuple[str, ...] = ()
        if classes:
            f = Path(classes).expanduser()
            if not f.is_file():
                raise DataError(f"webdataset: classes file {f} does not exist (one class name per line)")
            text = f.read_text(encoding="utf-8-sig", errors="replace")  # any encoding: undecodable bytes as U+FFFD
            self.classes = tuple(line.strip() for line in text.splitlines() if line.strip())
        self.num_classes = len(self.classes) or None
        #: the values known before reading the samples (the JSON parts' keys are seen as they are read)
        self.attributes = {"class": self.classes} if self.classes else {}
        self._files: dict[int, object] = {}
        self._pid = os.getpid()

    @staticmethod
    def _in_split(key: str, split: str, val_fraction: float) -> bool:
        h = int(hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) / 0xFFFFFFFF
        return (h < val_fraction) == (split != "train")

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, shard: int, where: tuple[int, int]) -> bytes:
        if self._pid != os.getpid():  # a forked data-loader worker opens its own files
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            if len(self._files) >= 64:  # bounded number of open files per process
                self._files.pop(next(iter(self._files))).close()
            f = self._files[shard] = open(self.shards[shard], "rb")
        f.seek(where[0])
        return f.read(where[1])

    def __getitem__(self, index: int) -> dict:
        shard, key, parts = self.samples[index]
        where = f"{self.shards[shard].name}:{key}"
        ext = next((k for k in self.image_keys if k in parts), None)
        if ext is None:
            return {"skipped": f"{where}: no image part (looked for {', '.join(self.image_keys)}; "
                               f"has {', '.join(sorted(parts))})"}
        try:
            img = load_rgb(io.BytesIO(self._read(shard, parts[ext])))
        except BadImage as exc:
            return {"skipped": f"{where}.{ext}: {exc}"}
        label = -1
        if self.label_key in parts:
            text = self._read(shard, parts[self.label_key]).decode("utf-8", "replace").strip()
            try:
                label = int(text)
            except ValueError:
                return {"skipped": f"{where}.{self.label_key}: label '{text[:20]}' is not an integer"}
            top = len(self.classes) or MAX_LABEL
            if not 0 <= label < top:
                return {"skipped": f"{where}.{self.label_key}: label {text[:20]} is outside 0..{top - 1}"
                                   + (" (the classes file's lines)" if self.classes else "")}
        caption = ""
        if self.caption_key in parts:
            caption = self._read(shard, parts[self.caption_key]).decode("utf-8", "replace").strip()
        elif 0 <= label < len(self.classes):
            caption = f"a photo of a {self.classes[label].replace('_', ' ')}"
        attributes: dict[str, str] = {}
        if label >= 0:
            attributes["class"] = self.classes[label] if label < len(self.classes) else str(label)
        if self.attributes_key in parts:
            text = self._read(shard, parts[self.attributes_key]).decode("utf-8", "replace")
            try:
                table = json.loads(text)
                assert isinstance(table, dict)
            except (json.JSONDecodeError, AssertionError):
                return {"skipped": f"{where}.{self.attributes_key}: not a JSON object of attributes"}
            attributes.update({str(k): str(v) for k, v in table.items() if isinstance(v, (str, int, float, bool))})
        arr = center_crop_uint8(img, self.resolution)
        sample = {"image": to_tensor(arr), "label": label, "caption": caption, "index": index}
        if attributes:
            sample["attributes"] = attributes
        return sample

    def __getstate__(self):  # open files stay with the process that opened them
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for s in self.shards:
            st = s.stat()
            h.update(f"{s.name}:{st.st_size}:{int(st.st_mtime)}\n".encode("utf-8", "surrogateescape"))
        h.update(f"{self.split}:{len(self.samples)}".encode())
        return f"webdataset:{h.hexdigest()[:16]}:n={len(self.samples)}:res={self.resolution}"
