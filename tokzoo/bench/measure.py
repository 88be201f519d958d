"""Measuring one tokenizer: its metrics built, the images streamed once
through it and every metric, the processes' states combined, each number
computed with its bootstrap interval, and the reference statistics cached."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokzoo.api import BenchContext, Metric, MetricResult
from tokzoo.bench.collectives import reduce_states
from tokzoo.bench.protocol import PROTOCOL_VERSION
from tokzoo.bench.results import PICTURE_NAME
from tokzoo.bench.stats import bootstrap_interval
from tokzoo.data import SkipCounter, build_dataset, collate, parse_data_arg
from tokzoo.data.preprocess import PREPROCESSING, to_uint8
from tokzoo.codes import check_encoded
from tokzoo.device import autocast_to, tf32  # noqa: F401 (tf32: importable here)
from tokzoo.errors import CodesError, ConfigError, TokzooError, who
from tokzoo.registry import get_registry


# -- the data ----------------------------------------------------------------------------------
def data_spec(data: str, resolution: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dataset spec bench measures: ``--data NAME`` (any registered dataset)
    or ``imagefolder:PATH``, with ``data.<param>=`` overrides; the host gives
    ``resolution`` (the tokenizer's) and ``split``."""
    params = dict(params or {})
    if "resolution" in params or "split" in params:
        raise ConfigError("bench sets the dataset's resolution (the tokenizer's) and split (val) itself; "
                          "leave data.resolution / data.split out")
    spec = parse_data_arg(data)
    get_registry().get("dataset", spec["name"])  # unknown names: close matches
    return {**spec, **params, "resolution": resolution}


class HeldOut(torch.utils.data.Dataset):
    """The images of ``data`` after its first ``skip`` (the ones bench measures)."""

    def __init__(self, data, skip: int):
        self.data, self.skip = data, skip
        self.num_classes = getattr(data, "num_classes", None)

    def __len__(self) -> int:
        return max(0, len(self.data) - self.skip)

    def __getitem__(self, index: int):
        return self.data[self.skip + index]


def probe_train_split(spec: dict[str, Any], measured: int, name: str, build=build_dataset):
    """The probe's train images: the ``train`` split, or, when the data has no
    held-out split (``same_for_every_split``: a flat folder, shards without a
    val source), the images after the ``measured`` ones, so the probe never
    trains on an image it is scored on."""
    train = build(spec, "train")
    if not getattr(train, "same_for_every_split", False):
        return train
    rest = HeldOut(train, measured)
    if len(rest) == 0:
        raise ValueError(f"'{name}' has no held-out split and all its {len(train)} images are measured: the probe "
                         "would train on the images it is scored on (give train/ and val/ folders, "
                         "data.val_fraction=..., or fewer --num-images)")
    return rest


# -- the metrics -------------------------------------------------------------------------------
def make_metrics(names: list[str], params: dict[str, dict[str, Any]], tok,
                 ctx: BenchContext) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(metrics ready for ``tok``, unavailable metric -> why, weight file -> SHA-256)."""
    metrics, unavailable, weights = {}, {}, {}
    reg = get_registry()
    continuous = bool(getattr(tok.info, "continuous", False))
    for m in names:
        try:
            metric = reg.create("metric", m, **params.get(m, {}))
            why = not_for_continuous(m, metric) if continuous else ""
            if why:  # latents, no codes: a metric of the codes is n/a, said with the reason
                unavailable[m] = why
                continue
            metric.setup(ctx)
        except TokzooError as exc:
            unavailable[m] = str(exc)
            continue
        except ImportError as exc:  # a metric whose package is missing
            unavailable[m] = f"needs a package that is not installed ({exc})"
            continue
        metric.reset_states()
        metric.reset(tok)
        weights.update(getattr(metric, "weights", {}) or {})
        metrics[m] = metric
    return metrics, unavailable, weights


#: why a metric of the discrete codes is n/a on a continuous tokenizer's row
CONTINUOUS_NA = "n/a: continuous tokenizer (latents, no discrete codes)"


def not_for_continuous(name: str, metric) -> str:
    """Why ``metric`` does not measure a continuous tokenizer ('' when it does:
    it declares ``measures_continuous = True``)."""
    if getattr(metric, "measures_continuous", False):
        return ""
    if any("measures_continuous" in vars(k) for k in type(metric).__mro__ if k.__module__ != "tokzoo.metric"):
        return CONTINUOUS_NA  # it says it reads the codes
    return (f"{CONTINUOUS_NA}; metric '{name}' does not declare measures_continuous = True (a metric that reads "
            "only the images may)")


def features_kind(tok) -> str | None:
    """What the probe's features are, recorded with every result: the tokenizer's
    ``token_features_kind``; a continuous one without it, its latents."""
    kind = getattr(tok, "token_features_kind", "") or None
    if getattr(tok.info, "continuous", False):
        return f"continuous: {kind}" if kind else "continuous latents, mean-pooled (no discrete tokens)"
    return kind


def bench_collate(samples: list[dict]) -> dict[str, Any]:
    """:func:`~tokzoo.data.collate`, with the images as uint8 (``image_u8``) when that is
    exact (every built-in dataset's images are k/255): a quarter of the bytes to the device,
    the same numbers. A dataset of other float values keeps its float images."""
    batch = collate(samples)
    if "image" in batch:
        u8 = to_uint8(batch["image"])
        if torch.equal(u8.float().div_(255), batch["image"]):
            batch["image_u8"] = u8
            del batch["image"]
    return batch


class Timer:
    """Encode and decode times of a batch: CUDA events on a GPU (read when the batch's one
    host read happens anyway), the wall clock elsewhere (the CPU runs in order)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a


@torch.no_grad()
def stream(name: str, tok, images, metrics: dict, unavailable: dict, skips: SkipCounter, *, device: torch.device,
           batch_size: int, grid_images: int, console: Console, workers: int = 0,
           show: bool = True, counts: dict[str, int] | None = None,
           autocast: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Stream ``images`` through the tokenizer and every metric, once; the first
    ``grid_images`` originals and reconstructions for the grid picture. A metric
    that fails on a batch becomes unavailable, not the bench. ``counts["non_finite"]``
    adds up the reconstructions holding NaN or Inf (measured as the saved image would be, and flagged).
    ``workers`` loader processes decode the next batches meanwhile (in order: the
    same images, the same numbers); on a GPU the batches are pinned, copied as uint8
    without blocking, and the batch is read on the host once (the codes' range, checked
    before decoding; the timings come from CUDA events); the NaN count stays on the device.
    ``autocast``: the dtype the tokenizer's encode and decode run in (``--precision bf16``)."""
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, collate_fn=bench_collate,
                                         num_workers=workers, pin_memory=cuda,
                                         prefetch_factor=4 if workers else None)
    grid_o, grid_r = [], []
    progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console, disable=not show)
    timer, non_finite = Timer(device), torch.zeros((), dtype=torch.long, device=device)
    tok.eval()
    with progress:
        task = progress.add_task(name, total=len(images), rate="")
        start, done = time.perf_counter(), 0
        for b, batch in enumerate(loader):
            skips.add(batch)
            if "image" not in batch and "image_u8" not in batch:
                continue
            if "image_u8" in batch:
                o8 = batch.pop("image_u8").to(device, non_blocking=cuda)
                x = o8.float().div_(255)
            else:
                x = batch["image"].to(device, non_blocking=cuda)
                o8 = to_uint8(x)
            if cuda and b == 0:
                torch.cuda.synchronize(device)  # the warm-up batch starts from an idle device
            t0 = timer.mark()
            try:
                with autocast_to(device, autocast):
                    codes = tok.encode(x)
            except CodesError as exc:  # Codes built against the contract: exit 3, naming who built them
                raise CodesError(f"{who(tok)}: encode() made Codes against the contract: {exc}") from None
            t1 = timer.mark()
            check_encoded(codes, tok, tok.info)  # inside the vocabulary (one host read), or its latents
            with autocast_to(device, autocast):
                rec = tok.decode(codes).float()
            t2 = timer.mark()
            non_finite += (~torch.isfinite(rec)).flatten(1).any(1).sum()
            r8 = to_uint8(rec)  # metrics see what a saved PNG would hold
            if cuda:
                t2.synchronize()
            batch.update(image=x, encode_s=timer.seconds(t0, t1), decode_s=timer.seconds(t1, t2), warmup=(b == 0))
            for m in list(metrics):
                try:
                    metrics[m].update(o8, r8, codes, batch)
                except (ValueError, RuntimeError, NotImplementedError) as exc:  # one metric, not the bench
                    unavailable[m] = f"failed: {str(exc).splitlines()[0]}"
                    del metrics[m]
            if sum(len(g) for g in grid_o) < grid_images:
                grid_o.append(o8.cpu())
                grid_r.append(r8.cpu())
            done += len(x)
            progress.update(task, advance=len(x), rate=f"{done / max(1e-9, time.perf_counter() - start):.0f} img/s")
    if counts is not None:
        counts["non_finite"] = counts.get("non_finite", 0) + int(non_finite)
    return grid_o, grid_r


#: the methods a metric written before MetricResult answered after compute(), read only then
_LEGACY = {"per_image": "per_image_values", "intervals": "intervals", "flags": "flags",
           "not_measured": "not_measured", "images": "images"}


def result_of(metric: Metric) -> MetricResult:
    """``metric.compute()`` as a :class:`MetricResult`: a plain dict is its values
    (with what a metric written before MetricResult answers from the methods it defines)."""
    out = metric.compute()
    if isinstance(out, MetricResult):
        return out
    if not isinstance(out, dict):
        raise ValueError(f"compute() returned {type(out).__name__}, not a MetricResult or a dict of floats")
    extra = {field: getattr(metric, method)() or {} for field, method in _LEGACY.items()
             if callable(getattr(metric, method, None))}
    return MetricResult(values=dict(out), **extra)


def compute(metrics: dict, unavailable: dict, sources: dict | None = None
            ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, str], dict[str, str], dict[str, Any]]:
    """(values, intervals, direction per key, flags, pictures) of every metric
    that can compute; one that cannot is unavailable, with the reason.
    ``sources`` (when given) is filled with result key -> the metric that gave it."""
    values: dict[str, float] = {}
    better: dict[str, str] = {}
    flags: dict[str, str] = {}
    intervals: dict[str, list[float]] = {}
    pictures: dict[str, torch.Tensor] = {}
    for m, metric in metrics.items():
        try:
            result = result_of(metric)
        except (NotImplementedError, ValueError) as exc:
            unavailable[m] = str(exc)
            continue
        better.update(metric.better)
        flags.update(result.flags)
        mine = dict(result.values)
        for key, v in list(mine.items()):  # NaN or Inf is no measurement: said, never written as a number
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                unavailable[key] = f"{m} computed {v!r}, not a finite number"
                del mine[key]
        values.update({k: float(v) for k, v in mine.items()})
        if sources is not None:
            sources.update({key: m for key in mine})
        unavailable.update(result.not_measured)
        for key, v in result.per_image.items():
            ci = bootstrap_interval(v.double().cpu()) if key in values else None
            if ci is not None:
                intervals[key] = [ci[0], ci[1]]
        for key, ci in result.intervals.items():
            lo, hi = (float(ci[0]), float(ci[1])) if ci is not None and len(ci) == 2 else (math.nan, math.nan)
            if key in values and math.isfinite(lo) and math.isfinite(hi) and lo <= hi:
                intervals[key] = [lo, hi]
        _pictures(m, result.images, pictures, unavailable)
    return values, intervals, better, flags, pictures


def _pictures(m: str, images: dict, out: dict[str, torch.Tensor], unavailable: dict) -> None:
    """Picture name -> uint8 images ``[n,3,H,W]`` a metric offers, checked."""
    for picture, shown in images.items():
        if not (isinstance(picture, str) and PICTURE_NAME.fullmatch(picture)):
            unavailable[f"{m} picture"] = (f"picture name {picture!r} refused: a file name of lower-case "
                                           "letters, digits, '-' and '_' (at most 40)")
        elif isinstance(shown, torch.Tensor) and shown.dtype == torch.uint8 and shown.dim() == 4:
            out[picture] = shown.cpu()
        else:
            unavailable[f"{m} picture"] = f"picture {picture!r} is not uint8 images [n,3,H,W]"


def metric_protocols(names: list[str], params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric -> its settings (:meth:`Metric.protocol`) as this bench asks for them (nothing is set up)."""
    reg = get_registry()
    out = {}
    for m in names:
        try:
            proto = reg.create("metric", m, **params.get(m, {})).protocol()
        except TokzooError:
            raise
        except Exception:  # a metric that cannot even be built is reported unavailable when measured
            continue
        if proto:
            out[m] = proto
    return out


def reduce_across(metrics: dict, coll) -> None:
    """Combine every metric's state over the processes of a ``torchrun`` bench
    (``coll``: :class:`tokzoo.bench.collectives.Collectives`), on the device."""
    for metric in metrics.values():
        reduce_states(metric, coll)


# -- reference statistics (the originals' side of rFID and the like), cached ----------------------
def _reference_cache_path(key: str) -> Path:
    from tokzoo.weights import cache_folder

    return cache_folder("fid-reference") / f"{key}.safetensors"  # checked writable before it is filled


def load_reference(m: str, metric, dataset: str, n: int, res: int) -> tuple[str, bool]:
    """(cache key, loaded?) of a metric's reference state over the originals."""
    ident = metric.reference_identity()
    if not ident:
        return "", False
    key = hashlib.sha256(json.dumps([m, ident, dataset, n, res, PREPROCESSING,
                                     PROTOCOL_VERSION]).encode()).hexdigest()[:24]
    path = _reference_cache_path(key)
    if path.is_file():
        from safetensors.torch import load_file

        try:
            metric.load_reference(load_file(str(path)))
            return key, True
        except Exception:  # a damaged cache file is recomputed
            pass
    return key, False


def save_reference(key: str, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = _reference_cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
