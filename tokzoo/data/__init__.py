"""Datasets and the canonical preprocessing.

Datasets yield ``{"image": [3,H,W] float in [0,1], "label": int, "caption": str,
"index": int}`` and optionally ``"attributes": {name: value}`` (what the image
shows: the answers of the ``vqa-probe``'s questions; a dataset lists the names
and values it offers in its ``attributes`` attribute when it knows them), or
``{"skipped": "path: reason"}`` for a file that cannot be read. :func:`collate`
drops the skipped ones and counts them in the batch, and :class:`SkipCounter`
reports them visibly.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tokzoo.textsafe import console as esc

#: imported when first used (PEP 562): naming a dataset on the command line imports no torch
_PREPROCESS = ("PREPROCESSING", "center_crop_uint8", "to_tensor", "to_uint8")


def __getattr__(name: str):
    if name in _PREPROCESS:
        from tokzoo.data import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module 'tokzoo.data' has no attribute '{name}'")

#: the splits of the procedural datasets (shapes, synthetic) and the number each
#: mixes into its random seed, so the splits never share an image
SPLITS = {"train": 0, "val": 1, "test": 2}


def split_index(dataset: str, split: str) -> int:
    """``SPLITS[split]``, or a clear error naming the dataset's splits."""
    if split not in SPLITS:
        from tokzoo.errors import DataError

        raise DataError(f"{dataset} has splits {sorted(SPLITS)}, not '{split}'")
    return SPLITS[split]


def collate(samples: list[dict]) -> dict[str, Any]:
    """Batch samples; skipped files are left out and listed under ``skipped``."""
    import torch

    good = [s for s in samples if "skipped" not in s]
    batch: dict[str, Any] = {"skipped": [s["skipped"] for s in samples if "skipped" in s]}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        batch["label"] = torch.tensor([s["label"] for s in good], dtype=torch.long)
        batch["caption"] = [s["caption"] for s in good]
        batch["index"] = torch.tensor([s["index"] for s in good], dtype=torch.long)
        if any(s.get("attributes") for s in good):
            batch["attributes"] = [dict(s.get("attributes") or {}) for s in good]
        if any("words" in s for s in good):  # word boxes and transcriptions (the text-ocr probe)
            batch["words"] = [list(s.get("words") or []) for s in good]
    return batch


class SkipCounter:
    """Counts skipped files and warns about each, once, on the console."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.skipped: list[str] = []

    def add(self, batch: dict) -> None:
        for item in batch.get("skipped", []):
            self.skipped.append(item)
            self.console.print(f"[yellow]warning:[/] skipped unreadable image {esc(item)}", highlight=False)

    def summary(self) -> str | None:
        if not self.skipped:
            return None
        return f"{len(self.skipped)} unreadable image(s) skipped"


#: datasets named with their folder on the command line (NAME:PATH)
FOLDER_DATASETS = ("imagefolder", "textfolder")


def parse_data_arg(arg: str) -> dict[str, Any]:
    """``NAME``, ``imagefolder:PATH`` or ``textfolder:PATH`` (the command-line forms) -> a dataset spec."""
    for name in FOLDER_DATASETS:
        if arg.startswith(name + ":"):
            return {"name": name, "path": arg.split(":", 1)[1]}
    if ":" in arg:
        from tokzoo.errors import ConfigError

        raise ConfigError(f"--data '{arg}': use a dataset name (see `tokzoo list dataset`), imagefolder:PATH or "
                          "textfolder:PATH")
    return {"name": arg}


def build_dataset(spec: Any, split: str):
    """Dataset from a spec (``"shapes"``, ``"imagefolder:PATH"`` or ``{name, **params}``)."""
    from tokzoo.schema import to_container
    from tokzoo.registry import get_registry

    if isinstance(spec, str):
        spec = parse_data_arg(spec)
    spec = dict(to_container(spec))
    comp = get_registry().get("dataset", spec.pop("name"))
    host = {"split": split}  # what the host passes to every dataset: split, and resolution when known
    if comp.config is None or "resolution" not in {f.name for f in dataclasses.fields(comp.config)}:
        if spec.get("resolution") is not None:
            host["resolution"] = spec.pop("resolution")
    if comp.config is not None:
        from tokzoo.schema import validate_params

        spec = validate_params(spec, comp.config, where=f"dataset '{comp.name}'")
    return comp.factory(**host, **spec)


def fingerprint(dataset, spec: Any) -> str:
    """What identifies a dataset's images (recorded in results, keys the rFID
    reference cache): ``dataset.fingerprint()`` when the dataset defines it
    (a hash of its files, or of its generator's parameters) and does not return
    None, else a hash of its
    spec and length - right for data made deterministically from its parameters."""
    import hashlib
    import json

    fn = getattr(dataset, "fingerprint", None)
    named = fn() if callable(fn) else None
    if named is not None:
        return str(named)
    from tokzoo.schema import to_container

    blob = json.dumps([to_container(spec), len(dataset)], sort_keys=True, default=str)
    name = spec.get("name", "data") if isinstance(spec, dict) else str(spec)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


__all__ = ["fingerprint", "collate", "SkipCounter", "build_dataset", "PREPROCESSING", "center_crop_uint8", "to_tensor", "to_uint8"]
