"""The measurement protocol: what every results.json records, so that two
numbers are compared only when they were measured the same way."""
from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tokzoo.bench.stats import BOOTSTRAP
from tokzoo.data.preprocess import PREPROCESSING
from tokzoo.measures import PROBE_PROTOCOL

PROTOCOL_VERSION = 2  # 2: the probe on features from the tokens alone; bootstrap intervals
#: protocol fields that must match for two results to be compared
PROTOCOL_KEYS = ("version", "preprocessing", "quantization", "dataset", "num_images", "reference", "extractors",
                 "probe", "precision")

#: ``--precision``: how the tokenizer's encode and decode run (the metrics run as they always do):
#: name -> (autocast dtype or None, TF32 matmuls and convolutions on a CUDA device)
PRECISIONS = {"fp32": (None, False), "tf32": (None, True), "bf16": ("bfloat16", True)}


def precision_block(name: str) -> dict[str, Any]:
    """The protocol's ``precision``: what ``--precision NAME`` runs the tokenizers in."""
    autocast, tf32 = PRECISIONS[name]
    return {"name": name, "autocast": autocast, "tf32": tf32}


#: how far a number measured on a GPU (fp32, TF32 off) may lie from the CPU's for the same
#: tokenizer and images: float order, not a change of method (result family -> (kind, bound));
#: checked by the ``agree`` section of benchmarks/gpu.sh, stated in docs/ci.md
DEVICE_AGREEMENT = {"psnr": ("abs", 0.01), "ssim": ("abs", 1e-3), "lpips": ("abs", 1e-4), "rfid": ("rel", 0.005),
                    "usage": ("abs", 0.002), "perplexity": ("rel", 0.005), "probe_top1": ("abs", 0.02)}


#: what a protocol block written before a field existed means by its absence
ABSENT = {"precision": precision_block("fp32")}


def protocol_value(protocol: dict[str, Any], key: str) -> Any:
    """``protocol[key]``, or what its absence meant (a results.json written before the field)."""
    return protocol.get(key, ABSENT.get(key))


def versions() -> dict[str, str]:
    """The packages a number depends on, with their installed versions."""
    out = {"python": platform.python_version()}
    for pkg in ("tokzoo", "torch", "torchvision", "torch-fidelity", "lpips", "scipy", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes); None outside a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def same_metric_settings(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first metric both protocol blocks hold settings for, under other
    settings in each (None when they agree): its numbers are not comparable."""
    a, b = old.get("metrics") or {}, new.get("metrics") or {}
    for m in sorted(set(a) & set(b)):
        if a[m] != b[m]:
            return m
    return None


def protocol_key(data: str, num_images: int | str, resolution: int, probe_train_images: int) -> str:
    """What a finished entry was measured under: a re-bench reuses it only when this matches."""
    import json

    return json.dumps([data, num_images, resolution, PROTOCOL_VERSION, probe_train_images], sort_keys=True)


def protocol_block(entries: list[dict[str, Any]], *, data: str, num_images: int | str, probe_train_images: int,
                   world: int, device: str, plugins: dict[str, str],
                   metric_protocols: dict[str, dict[str, Any]] | None = None,
                   precision: str = "fp32") -> dict[str, Any]:
    """results.json's ``protocol``: every setting the numbers of ``entries`` depend on
    (the metrics' own settings from the entries, or ``metric_protocols`` when given)."""
    extractors: dict[str, str] = {}
    metrics: dict[str, dict[str, Any]] = dict(metric_protocols or {})
    for e in entries:
        extractors.update(e.get("extractors", {}))
        for m, proto in (e.get("metric_protocols") or {}).items():
            metrics.setdefault(m, proto)
    return {
        "version": PROTOCOL_VERSION,
        "preprocessing": dict(PREPROCESSING),
        "quantization": "uint8 (reconstructions rounded as a saved PNG)",
        "dataset": data,
        "num_images": num_images,
        "reference": "preprocessed originals of the same images",
        "extractors": extractors,
        "probe": dict(PROBE_PROTOCOL, train_images=probe_train_images),
        "precision": precision_block(precision),
        **({"metrics": metrics} if metrics else {}),  # a metric's own settings (Metric.protocol), e.g. the AR probe's
        "intervals": dict(BOOTSTRAP),
        "fid": "torch-fidelity InceptionV3 pool3 (2048), TF-compatible bilinear resize to 299, float64 statistics",
        "psnr_ssim": "uint8, data_range=255; SSIM Gaussian 11x11 sigma 1.5",
        "world_size": world,
        "device": device,
        "packages": versions(),
        "plugins": plugins,  # every loaded plugin distribution and its version
        "git_revision": git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
