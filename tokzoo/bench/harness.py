"""``tokzoo bench``: every tokenizer through every metric, one pass, one protocol.

Images stream once through each tokenizer in batches: preprocess (the
protocol's centre crop) -> encode -> decode -> quantize both to uint8 ->
every metric's ``update``. Nothing is written to disk per image, so memory
stays flat as the image count grows. Under ``torchrun`` each process takes
every ``world``-th image and metric states are summed across processes.

The run folder gets ``results.json`` (numbers + the protocol block),
``results.md``, ``results.csv`` and ``recon_grid.png``, each written
atomically after every tokenizer, so a killed bench re-run with the same
folder reuses the tokenizers it had finished.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tokzoo.api import BenchContext, Codes
from tokzoo.errors import check_returns
from tokzoo.ckptio import RunLock, atomic_write  # noqa: F401 (atomic_write: also used by benchmarks/reproduce.py)
from tokzoo.bench.probe import PROBE_PROTOCOL
from tokzoo.bench.stats import BOOTSTRAP, bootstrap_interval, half_width
from tokzoo.weights import using_weights_dir
from tokzoo.data import SkipCounter, build_dataset, collate, fingerprint, parse_data_arg
from tokzoo.data.preprocess import PREPROCESSING, to_uint8
from tokzoo.errors import CheckpointError, ConfigError, DataError, TokzooError, UnknownNameError
from tokzoo.pretrained import random_parts
from tokzoo.registry import get_registry

PROTOCOL_VERSION = 2  # 2: the probe on features from the tokens alone; bootstrap intervals
DEFAULT_METRICS = ["psnr", "ssim", "lpips", "rfid", "codebook", "probe", "throughput"]
#: protocol fields that must match for two results to be compared
PROTOCOL_KEYS = ("version", "preprocessing", "quantization", "dataset", "num_images", "reference", "extractors",
                 "probe")


@dataclass
class BenchOptions:
    tokenizers: list[str]
    data: str = "shapes"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    num_images: int | str = 512  # or "all": every image of the val split
    batch_size: int = 32
    probe_train_images: int = 1024
    out_dir: str = "runs/bench"
    weights_dir: str | None = None
    device: str = "auto"
    grid_images: int = 8
    baseline: str | None = None  # a results.json whose compare rows go into report.html
    swept: dict[str, dict[str, Any]] = field(default_factory=dict)  # tokenizer -> its values in a sweep
    data_params: dict[str, Any] = field(default_factory=dict)  # data.<param>=... overrides
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics.<metric>.<param>=...


# -- small helpers -------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("tokzoo", "torch", "torchvision", "torch-fidelity", "lpips", "scipy", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_revision() -> str | None:
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


def file_sha256(path: Path) -> str:
    from tokzoo.weights import sha256

    return sha256(path)


def resolve_tokenizer(name: str, device: torch.device):
    """A preset name (its run folder's trained weights) or a checkpoint path -> tokenizer."""
    from tokzoo.config import list_presets, load_run_config
    from tokzoo.train.checkpoint import load_tokenizer

    p = Path(name).expanduser()
    is_yaml = p.suffix in (".yaml", ".yml") and p.is_file()  # a preset file, as `tokzoo train FILE` takes
    if p.exists() and not is_yaml:
        return load_tokenizer(p, map_location=str(device))
    presets = list_presets()
    if name not in presets and not is_yaml:
        raise UnknownNameError("tokenizer (preset or checkpoint path)", name, presets)
    config = load_run_config(name)
    if not config.get("recipe"):  # a ready-made tokenizer: it loads its own weights (or has none)
        from tokzoo.train.checkpoint import build_model_from_config

        return build_model_from_config(config).to(device).eval()
    run_dir = Path(config["run_dir"])
    try:
        tok = load_tokenizer(run_dir, map_location=str(device))
    except CheckpointError as exc:
        raise CheckpointError(f"no trained weights for '{name}' in {run_dir}: train it first with "
                              f"`tokzoo train {name}`, or pass a checkpoint path ({exc})") from None
    finished = run_dir / "checkpoints" / "finished"
    used = Path(tok.checkpoint_path).name
    if not finished.is_file() or finished.read_text().strip() != used:
        tok.unfinished = used  # a preset's run that never finished: benched from its last checkpoint, visibly
    return tok


def components(tok) -> dict[str, dict[str, str]]:
    """Module path -> the registered component (kind, name, distribution, version) built there."""
    out = {}
    for path, module in tok.named_modules():
        info = getattr(module, "tokzoo_component", None)
        if isinstance(info, dict):
            out[path or "(tokenizer)"] = dict(info)
    return out


def _weight_files(weights_dir) -> dict[str, str | None]:
    """Which known weight files are findable now (path, size, mtime): adding one changes the identity."""
    from tokzoo.weights import KNOWN_FILES, find_weights

    out = {}
    for key, fname in KNOWN_FILES.items():
        try:
            p = find_weights(fname, key, weights_dir)
            st = p.stat()
            out[key] = f"{p}|{st.st_size}|{int(st.st_mtime)}"
        except TokzooError:
            out[key] = None
    return out


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_cache_path(key: str) -> Path:
    from tokzoo.weights import cache_dir

    return cache_dir() / "fid-reference" / f"{key}.safetensors"


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


# -- the harness ----------------------------------------------------------------------------
class Bench:
    def __init__(self, opts: BenchOptions, console: Console | None = None):
        from tokzoo.device import dist_info, maybe_init_distributed, pick_device

        self.o = opts
        self.console = console or Console()
        self.device = pick_device(opts.device)
        maybe_init_distributed(self.device)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.out = Path(opts.out_dir)
        self.unavailable: dict[tuple[str, str], list[str]] = {}  # (metric, why) -> tokenizers measured now
        self.report_files: list[Path] = []
        self._datasets: dict[tuple[str, str], Any] = {}  # (spec, split) -> dataset, see _dataset
        reg = get_registry()
        for m in opts.metrics:
            reg.get("metric", m)  # unknown names fail before any work
        for m in opts.metric_params:
            if m not in opts.metrics:
                raise ConfigError(f"metrics.{m}.*: '{m}' is not among the metrics measured ({', '.join(opts.metrics)})")
            comp = reg.get("metric", m)
            if comp.config is not None:
                from tokzoo.config import validate_params

                validate_params(opts.metric_params[m], comp.config, where=f"metrics.{m}")
        if not opts.tokenizers:
            raise ConfigError("give at least one tokenizer: --tokenizers vqgan-tiny,semhitok-tiny")
        if opts.num_images != "all" and (not isinstance(opts.num_images, int) or opts.num_images <= 0):
            raise ConfigError(f"--num-images must be a positive integer or 'all', not {opts.num_images}")
        for flag, value in (("--batch-size", opts.batch_size), ("--probe-train-images", opts.probe_train_images)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{flag} must be a positive integer, not {value}")
        if opts.baseline:  # a baseline that cannot be read fails now, not after the measuring
            from tokzoo.bench.compare import load_results

            load_results(opts.baseline)

    def run(self) -> dict[str, Any]:
        lock = RunLock(self.out, "results folder")
        if self.is_main:  # one bench per --out at a time: results are merged, never overwritten by another
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                probe = self.out / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")  # a folder we cannot write to fails now, before any measuring
                probe.unlink()
            except PermissionError as exc:
                lock.release()
                raise ConfigError(f"--out {self.out}: cannot write there ({exc.strerror}); "
                                  "choose a folder you can write to") from None
            for junk in self.out.glob(".*.tmp"):  # left by a bench killed mid-write
                junk.unlink(missing_ok=True)
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> dict[str, Any]:
        results = self._load_previous()
        grid_rows = self._stored_rows()  # every tokenizer's grid row measured into this --out before
        originals_now = False
        for name in self.o.tokenizers:
            with using_weights_dir(self.o.weights_dir):  # ready-made tokenizers find released files there
                tok = resolve_tokenizer(name, self.device)
            ident = self._identity(tok)
            prev = results["tokenizers"].get(name)
            if prev and prev.get("identity") == ident and prev.get("protocol_key") == self._protocol_key(tok):
                self.console.print(f"[dim]{name}: reusing finished results from {self.out / 'results.json'}[/]")
                continue
            entry, originals, recons = self._bench_one(name, tok)
            entry["identity"] = ident
            if name in self.o.swept:
                entry["swept"] = self.o.swept[name]
            results["tokenizers"][name] = entry
            if not originals_now:  # the first row: this run's originals
                grid_rows["originals"], originals_now = originals, True
            grid_rows[_row_key(name)] = recons.contiguous()
            if self.is_main:
                self._write(results, grid_rows)
        if self.world > 1:
            dist.barrier()
        if self.is_main:
            self._write(results, grid_rows)
            self.console.print(render_table(results, width=self.console.width))
            short = short_names(results["tokenizers"])
            for (m, why), names in self.unavailable.items():
                who = ", ".join(short[n] for n in names)
                self.console.print(f"[yellow]{m} unavailable[/] ({who}): {why}", highlight=False)
            for tname, e in results["tokenizers"].items():
                if e.get("random_parts"):
                    self.console.print(f"[bold yellow]warning:[/] {tname} was measured with deliberately RANDOM "
                                       f"pretrained parts ({', '.join(e['random_parts'])}): not comparable with a "
                                       "real one", highlight=False)
            for f in [self.out / "results.json", self.out / "results.md", *self.report_files]:
                self.console.print(f"{f.name:13s} {f}", highlight=False, soft_wrap=True)
        return results

    # -- identity / protocol ------------------------------------------------------------------
    def _identity(self, tok) -> dict[str, Any]:
        """Everything a finished result depends on: a re-bench reuses it only when all of it matches."""
        ckpt = getattr(tok, "checkpoint_path", None)
        sha = file_sha256(Path(ckpt) / "model.safetensors") if ckpt else None
        cfg_hash = hashlib.sha256(json.dumps(tok.config, sort_keys=True).encode()).hexdigest()[:16] if tok.config else None
        return {"checkpoint": ckpt, "checkpoint_sha256": sha, "config_sha256": cfg_hash,
                "metrics": sorted(self.o.metrics), "metric_params": self.o.metric_params,
                "data_params": self.o.data_params, "weight_files": _weight_files(self.o.weights_dir),
                "plugins": get_registry().versions(), "components": components(tok)}

    def _protocol_key(self, tok) -> str:
        return json.dumps([self.o.data, self.o.num_images, tok.info.resolution, PROTOCOL_VERSION,
                           self.o.probe_train_images], sort_keys=True)

    def _load_previous(self) -> dict[str, Any]:
        path = self.out / "results.json"
        fresh = {"tokzoo_results": 1, "protocol": None, "tokenizers": {}}
        if not path.is_file():
            return fresh
        try:
            old = json.loads(path.read_text())
            assert isinstance(old, dict) and isinstance(old.get("tokenizers"), dict)
        except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, OSError):
            backup = path.with_name(f"results.unreadable-{int(time.time())}.json")
            os.replace(path, backup)
            self.console.print(f"[yellow]warning:[/] {path} was unreadable; kept it as {backup}")
            return fresh
        # other tokenizers measured under this same protocol are kept (merged); under another one the
        # file is set aside whole, never mixed and never lost
        now = self.protocol({"tokenizers": {}})
        same = all((old.get("protocol") or {}).get(k) == now.get(k) for k in PROTOCOL_KEYS if k != "extractors")
        if not same and any(k not in self.o.tokenizers for k in old["tokenizers"]):
            backup = path.with_name(f"results.{time.strftime('%Y%m%d-%H%M%S')}.json")
            os.replace(path, backup)
            self.console.print(f"[yellow]note:[/] {path} held results under another protocol; "
                               f"kept them as {backup}", highlight=False)
            return fresh
        return old

    def _dataset(self, spec: dict[str, Any], split: str):
        """``build_dataset(spec, split)``, built once per bench: tokenizers of one
        resolution share it (listing ImageNet's train/ costs about a minute)."""
        key = (json.dumps(spec, sort_keys=True, default=str), split)
        if key not in self._datasets:
            from rich.errors import LiveError

            try:  # a spinner while a large folder is listed (nothing when another live display runs)
                with self.console.status(f"reading the {split} split of {self.o.data} ...", spinner="line"):
                    self._datasets[key] = build_dataset(spec, split)
            except LiveError:
                self._datasets[key] = build_dataset(spec, split)
        return self._datasets[key]

    # -- one tokenizer ---------------------------------------------------------------------------
    def _bench_one(self, name: str, tok) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """One tokenizer, read top to bottom: data, metrics, one streaming pass, results."""
        res = tok.info.resolution
        spec = data_spec(self.o.data, res, self.o.data_params)
        val = self._dataset(spec, "val")
        n = len(val) if self.o.num_images == "all" else self.o.num_images
        if n > len(val):
            raise ConfigError(f"--num-images {n}: the val split of '{self.o.data}' has only {len(val)} images; "
                              f"ask for --num-images {len(val)} or --num-images all (a number measured on fewer "
                              "images than the protocol records would mislead)")
        ctx = BenchContext(device=self.device, weights_dir=self.o.weights_dir, batch_size=self.o.batch_size,
                           num_images=n, probe_train_images=self.o.probe_train_images,
                           train_split=lambda: probe_train_split(spec, n, self.o.data, self._dataset))
        metrics, unavailable, weights = self._make_metrics(tok, ctx)
        dataset = fingerprint(val, spec)  # may read the whole folder listing: once per tokenizer
        cached = {m: self._reference(m, metric, dataset, n, res) for m, metric in metrics.items()}
        # one pass over this rank's shard of the images: encode, decode, every metric sees each batch once
        skips = SkipCounter(self.console)
        grid_o, grid_r = self._measure(name, tok, val, list(range(n))[self.rank::self.world], metrics, unavailable,
                                       skips)
        if self.world == 1 and len(skips.skipped) >= n:
            raise DataError(f"{name}: none of the {n} images of '{self.o.data}' could be read "
                            f"({len(skips.skipped)} skipped as unreadable)")
        # combine the processes, compute, cache reference statistics
        if self.world > 1:
            for metric in metrics.values():
                metric.reduce(lambda t: dist.all_reduce(t), dist.all_gather_object, self.world)
        values: dict[str, float] = {}
        better: dict[str, str] = {}
        flags: dict[str, str] = {}
        intervals: dict[str, list[float]] = {}
        for m, metric in metrics.items():
            try:
                values.update(metric.compute())
                better.update(getattr(metric, "better", {}))
                flags.update(metric.flags() if hasattr(metric, "flags") else {})
            except (NotImplementedError, ValueError) as exc:
                unavailable[m] = str(exc)
                continue
            per_image = metric.per_image_values() if hasattr(metric, "per_image_values") else {}
            for key, v in (per_image or {}).items():
                ci = bootstrap_interval(v) if key in values else None
                if ci is not None:
                    intervals[key] = [ci[0], ci[1]]
        for m, (key, loaded) in cached.items():
            if key and not loaded and m in metrics and self.is_main:
                self._save_reference(key, metrics[m].reference_state())
        entry = {
            "metrics": values, "intervals": intervals, "better": better, "unavailable": unavailable,
            "info": tok.info.as_dict(), "token_features": getattr(tok, "token_features_kind", "") or None,
            "resolution": res, "num_images": n, "dataset": dataset,
            "skipped_images": len(skips.skipped), "extractors": weights, "protocol_key": self._protocol_key(tok),
            # pretrained parts deliberately left random (pretrained: random): never a number to pass for a real one
            "random_parts": random_parts((tok.config or {}).get("model")),
            # a preset whose run never finished: the checkpoint it was benched from
            "unfinished": getattr(tok, "unfinished", None),
        }
        if flags:  # numbers that may mislead, with the reason, shown wherever they are
            entry["flags"] = {k: why for k, why in flags.items() if k in values}
        if entry["unfinished"]:
            self.console.print(f"[bold yellow]note:[/] {name}'s run has not finished; benched from its checkpoint "
                               f"'{entry['unfinished']}'", highlight=False)
        for m, why in unavailable.items():  # said once per reason, after the table
            self.unavailable.setdefault((m, why), []).append(name)
        k = self.o.grid_images
        if not grid_o:
            return entry, torch.zeros(0, 3, res, res, dtype=torch.uint8), torch.zeros(0, 3, res, res, dtype=torch.uint8)
        return entry, torch.cat(grid_o)[:k], torch.cat(grid_r)[:k]

    def _make_metrics(self, tok, ctx: BenchContext) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        """(metrics ready for ``tok``, unavailable metric -> why, weight file -> SHA-256)."""
        metrics, unavailable, weights = {}, {}, {}
        reg = get_registry()
        for m in self.o.metrics:
            try:
                metric = reg.create("metric", m, **self.o.metric_params.get(m, {}))
                metric.setup(ctx)
            except TokzooError as exc:
                unavailable[m] = str(exc)
                continue
            except ImportError as exc:  # a metric whose package is missing
                unavailable[m] = f"needs a package that is not installed ({exc})"
                continue
            metric.reset(tok)
            weights.update(getattr(metric, "weights", {}) or {})
            metrics[m] = metric
        return metrics, unavailable, weights

    @torch.no_grad()
    def _measure(self, name: str, tok, val, indices: list[int], metrics: dict, unavailable: dict,
                 skips: SkipCounter) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stream the images through the tokenizer and the metrics; the first images for the grid."""
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val, indices), batch_size=self.o.batch_size,
                                             collate_fn=collate, num_workers=0)
        grid_o, grid_r = [], []
        progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=self.console, disable=not self.is_main)
        tok.eval()
        with progress:
            task = progress.add_task(name, total=len(indices))
            for b, batch in enumerate(loader):
                skips.add(batch)
                if "image" not in batch:
                    continue
                x = batch["image"].to(self.device)
                _sync(self.device)  # timings: synchronised on GPU
                t0 = time.perf_counter()
                codes = check_returns(tok, "encode", tok.encode(x), Codes, "tokzoo.api.Codes")
                _sync(self.device)
                t1 = time.perf_counter()
                rec = tok.decode(codes)
                _sync(self.device)
                t2 = time.perf_counter()
                o8, r8 = to_uint8(x), to_uint8(rec)  # metrics see what a saved PNG would hold
                batch.update(image=x, encode_s=t1 - t0, decode_s=t2 - t1, warmup=(b == 0))
                for m in list(metrics):
                    try:
                        metrics[m].update(o8, r8, codes, batch)
                    except (ValueError, RuntimeError, NotImplementedError) as exc:  # one metric, not the bench
                        unavailable[m] = f"failed: {str(exc).splitlines()[0]}"
                        del metrics[m]
                if sum(len(g) for g in grid_o) < self.o.grid_images:
                    grid_o.append(o8.cpu())
                    grid_r.append(r8.cpu())
                progress.update(task, advance=len(x))
        return grid_o, grid_r

    def _reference(self, m: str, metric, dataset: str, n: int, res: int) -> tuple[str, bool]:
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

    def _save_reference(self, key: str, state: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = _reference_cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, path)

    # -- outputs ----------------------------------------------------------------------------------
    def protocol(self, results: dict[str, Any]) -> dict[str, Any]:
        entries = list(results["tokenizers"].values())
        extractors: dict[str, str] = {}
        for e in entries:
            extractors.update(e.get("extractors", {}))
        return {
            "version": PROTOCOL_VERSION,
            "preprocessing": dict(PREPROCESSING),
            "quantization": "uint8 (reconstructions rounded as a saved PNG)",
            "dataset": self.o.data,
            "num_images": self.o.num_images,
            "reference": "preprocessed originals of the same images",
            "extractors": extractors,
            "probe": dict(PROBE_PROTOCOL, train_images=self.o.probe_train_images),
            "intervals": dict(BOOTSTRAP),
            "fid": "torch-fidelity InceptionV3 pool3 (2048), TF-compatible bilinear resize to 299, float64 statistics",
            "psnr_ssim": "uint8, data_range=255; SSIM Gaussian 11x11 sigma 1.5",
            "world_size": self.world,
            "device": str(self.device),
            "packages": _versions(),
            "plugins": get_registry().versions(),  # every loaded plugin distribution and its version
            "git_revision": _git_revision(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _write(self, results: dict[str, Any], grid_rows: dict[str, torch.Tensor]) -> None:
        """results.json/md/csv, the stored grid rows (keyed by :func:`_row_key`) and the grid picture."""
        results["protocol"] = self.protocol(results)
        atomic_write(self.out / "results.json", json.dumps(results, indent=2))
        atomic_write(self.out / "results.md", render_markdown(results))
        atomic_write(self.out / "results.csv", render_csv(results))
        # every tokenizer's grid row is kept (uint8) so the picture shows all of results.json, not this run's
        if grid_rows:
            from safetensors.torch import save as save_bytes

            atomic_write(self.out / "grid_samples.safetensors", save_bytes(grid_rows))
        ordered = {"originals": grid_rows["originals"]} if "originals" in grid_rows else {}
        for name in results["tokenizers"]:
            if _row_key(name) in grid_rows:
                ordered[name] = grid_rows[_row_key(name)]
        grid_png = _grid_png(ordered) if len(ordered) > 1 else None
        if grid_png:
            atomic_write(self.out / "recon_grid.png", grid_png)
        from tokzoo.bench.report import write_report  # the upper layer: it imports this module

        self.report_files = write_report(self.out, results, grid_png, self.o.baseline, atomic_write)

    def _stored_rows(self) -> dict[str, torch.Tensor]:
        """The grid rows kept in ``--out`` by earlier benches (keys: :func:`_row_key`)."""
        samples = self.out / "grid_samples.safetensors"
        if not samples.is_file():
            return {}
        try:
            from safetensors.torch import load_file

            return load_file(str(samples))
        except Exception:  # an unreadable cache only costs the old rows of the picture
            return {}


def _row_key(name: str) -> str:
    return "originals" if name == "originals" else "tok:" + name


def _grid_png(rows: dict[str, torch.Tensor]) -> bytes:
    """Originals in the first row, each tokenizer's reconstructions below, labelled."""
    from PIL import Image, ImageDraw

    names = list(rows)
    n, _, h, w = rows["originals"].shape
    label_w, scale = 110, max(1, 96 // h)
    canvas = Image.new("RGB", (label_w + n * w * scale, len(names) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    short = short_names(names)
    for r, name in enumerate(names):
        imgs = rows[name]
        for c in range(min(n, len(imgs))):
            tile = Image.fromarray(imgs[c].permute(1, 2, 0).numpy()).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * w * scale, r * h * scale))
        label = short[name]  # a checkpoint path: its run folder's name
        draw.text((4, r * h * scale + h * scale // 2 - 6), label[:18], fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# -- rendering --------------------------------------------------------------------------------
SUMMARY = [("rFID", "rfid"), ("PSNR", "psnr"), ("SSIM", "ssim"), ("LPIPS", "lpips"), ("probe top-1", "probe_top1"),
           ("usage", "usage/"), ("perplexity", "perplexity/"), ("tokens", "tokens_per_image"),
           ("bits", "bits_per_image"), ("enc img/s", "encode_img_s"), ("dec img/s", "decode_img_s")]


SWEPT = "swept:"  # column key prefix of a sweep's values


def short_names(names: Iterable[str]) -> dict[str, str]:
    """How outputs name each tokenizer of ``names``: a preset's own name; a
    path's last folder, with its run folder when it is a checkpoint
    (``run/stage1-final``), and more of the path while it would read the same
    as another one's."""
    names = list(dict.fromkeys(names))
    parts, size = {}, {}
    for n in names:
        path = Path(n)
        parts[n] = ([p for p in path.parts if p not in ("checkpoints", path.anchor)] or [n]) if os.sep in n else [n]
        size[n] = 2 if len(parts[n]) > 1 and path.parent.name == "checkpoints" else 1
    while True:
        labels = {n: "/".join(parts[n][-size[n]:]) for n in names}
        seen: dict[str, list[str]] = {}
        for n, lab in labels.items():
            seen.setdefault(lab, []).append(n)
        grow = [n for same in seen.values() if len(same) > 1 for n in same if size[n] < len(parts[n])]
        if not grow:
            return labels
        for n in grow:
            size[n] += 1


def unavailable_by_reason(results: dict[str, Any], name=None) -> dict[tuple[str, str], list[str]]:
    """(metric, why it is unavailable) -> the tokenizers it hit, named by ``name(key, entry)``
    (their :func:`short_names` by default): one line per reason in every output instead of one per tokenizer."""
    out: dict[tuple[str, str], list[str]] = {}
    short = short_names(results["tokenizers"])
    for n, e in results["tokenizers"].items():
        for m, why in (e.get("unavailable") or {}).items():
            out.setdefault((m, why), []).append(short[n] if name is None else name(n, e))
    return out


def summary_cells(results: dict[str, Any], intervals: bool) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """(columns, tokenizer -> cells) of the summary, without the columns no tokenizer has."""
    columns = summary_columns(results)
    cells = {name: _summary_cells(e, columns, intervals) for name, e in results["tokenizers"].items()}
    keep = [i for i in range(len(columns)) if any(c[i] != "n/a" for c in cells.values())]
    return [columns[i] for i in keep], {name: [c[i] for i in keep] for name, c in cells.items()}


def summary_columns(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's columns: the core summary, then every other metric result
    (a plugin's metric, LPIPS-VGG, ...) in first-seen order."""
    covered = [key for _, key in SUMMARY]
    swept: list[str] = []  # a sweep's values first, as columns
    for e in results["tokenizers"].values():
        swept += [k for k in (e.get("swept") or {}) if k not in swept]
    extra: list[str] = []
    for e in results["tokenizers"].values():
        for k in e["metrics"]:
            if not any(k == c or (c.endswith("/") and k.startswith(c)) for c in covered) and k not in extra:
                extra.append(k)
    present = [(t, k) for t, k in SUMMARY]
    return [(k, SWEPT + k) for k in swept] + present + [(k, k) for k in extra]


def _summary_cells(e: dict[str, Any], columns=None, intervals: bool = False) -> list[str]:
    """One row's cells; with ``intervals``, a mean's bootstrap 95 % half-width as ``± h``."""
    m = e["metrics"]
    cells = []
    for _, key in columns or SUMMARY:
        if key.startswith(SWEPT):
            v = (e.get("swept") or {}).get(key[len(SWEPT):])
            cells.append("n/a" if v is None else str(v))
        elif key.endswith("/"):
            parts = [f"{k[len(key):]} {_fmt(v)}" for k, v in m.items() if k.startswith(key)]
            cells.append(", ".join(parts) if parts else "n/a")
        else:
            cell = _fmt(m.get(key))
            h = half_width((e.get("intervals") or {}).get(key)) if intervals else None
            if h is not None and cell != "n/a":
                cell += f" ± {h:.2g}"
            if key in (e.get("flags") or {}) and cell != "n/a":
                cell += " †"  # a flagged number: the reason is printed with the table
            cells.append(cell)
    return cells


def _columns(results: dict[str, Any]) -> list[str]:
    order = ["rfid", "psnr", "ssim", "lpips", "probe_top1"]
    cols: list[str] = []
    for e in results["tokenizers"].values():
        for k in e["metrics"]:
            if k not in cols:
                cols.append(k)
    rest = sorted(c for c in cols if c not in order)
    return [c for c in order if c in cols] + rest


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}"


def label(name: str, e: dict[str, Any]) -> str:
    """A tokenizer's name, flagged when a pretrained part of it was random."""
    parts = e.get("random_parts") or []
    if e.get("swept"):  # a sweep's point: its folder's name (the swept values) is unique in the sweep
        name = Path(name).name
    name = f"{name} (RANDOM {', '.join(parts)})" if parts else name
    return f"{name} (unfinished: {e['unfinished']})" if e.get("unfinished") else name


#: which summary columns a narrow terminal keeps first (the rest are in results.md)
NARROW_PRIORITY = ("PSNR", "SSIM", "rFID", "LPIPS", "probe top-1", "tokens", "bits", "enc img/s", "dec img/s",
                   "usage", "perplexity")


def _flag_lines(results: dict[str, Any], keys: set[str] | None = None) -> list[str]:
    """'tokenizer / metric: why' for every flagged number (of ``keys`` when given)."""
    short = short_names(results["tokenizers"])
    return [f"{short[n]} / {k}: {why}" for n, e in results["tokenizers"].items()
            for k, why in (e.get("flags") or {}).items() if keys is None or k in keys]


def render_table(results: dict[str, Any], width: int | None = None) -> Table:
    """The terminal table; given a ``width``, the columns that fit it, most
    important first, and a caption naming the ones left to results.md."""
    columns, rows = summary_cells(results, intervals=False)  # no empty columns
    keep = list(range(len(columns)))
    short = short_names(results["tokenizers"])
    names = {name: label(short[name], e) for name, e in results["tokenizers"].items()}
    dropped: list[str] = []
    if width:
        def need(i: int) -> int:
            return max([len(columns[i][0])] + [len(r[i]) for r in rows.values()]) + 3

        used = max([len("tokenizer")] + [len(n) for n in names.values()]) + 4
        order = sorted(keep, key=lambda i: -1 if columns[i][1].startswith(SWEPT) else
                       NARROW_PRIORITY.index(columns[i][0]) if columns[i][0] in NARROW_PRIORITY
                       else len(NARROW_PRIORITY))
        chosen = []
        for i in order:
            if used + need(i) <= width:
                chosen.append(i)
                used += need(i)
        dropped = [columns[i][0] for i in keep if i not in chosen]
        keep = [i for i in keep if i in chosen]
    notes = [f"not shown at this width: {', '.join(dropped)} (see results.md)"] if dropped else []
    shown = {columns[i][1] for i in keep}
    notes += ["† " + line for line in _flag_lines(results, shown)]
    table = Table(title="tokzoo bench", caption="\n".join(notes) or None)
    table.add_column("tokenizer")
    for i in keep:
        table.add_column(columns[i][0], justify="right")
    for name in results["tokenizers"]:
        table.add_row(names[name], *[rows[name][i] for i in keep])
    return table


def render_markdown(results: dict[str, Any]) -> str:
    p = results.get("protocol") or {}
    columns, cells = summary_cells(results, intervals=True)
    lines = ["# tokzoo bench results", "",
             f"Protocol v{p.get('version')}: {p.get('dataset')}, {p.get('num_images')} images, "
             f"{(p.get('preprocessing') or {}).get('name')} v{(p.get('preprocessing') or {}).get('version')}, "
             "metrics on uint8 reconstructions; ± is half the bootstrap 95 % interval over the images "
             "(1,000 resamples); the probe uses features from the tokens alone.", "",
             "| tokenizer | " + " | ".join(t for t, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, e in results["tokenizers"].items():
        lines.append(f"| {label(name, e)} | " + " | ".join(cells[name]) + " |")
    flagged = _flag_lines(results)
    if flagged:
        lines += ["", "Flagged numbers (†):", ""] + [f"- {line}" for line in flagged]
    randoms = [(n, e["random_parts"]) for n, e in results["tokenizers"].items() if e.get("random_parts")]
    if randoms:
        lines += ["", "Measured with deliberately random pretrained parts (`pretrained: random`), not comparable with "
                  "real ones:", ""] + [f"- {n}: {', '.join(parts)}" for n, parts in randoms]
    missing = unavailable_by_reason(results, name=label)
    if missing:
        lines += ["", "Unavailable:", ""] + [f"- {m} for {', '.join(names)}: {why}"
                                             for (m, why), names in missing.items()]
    return "\n".join(lines) + "\n"


def render_csv(results: dict[str, Any]) -> str:
    cols = _columns(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    spread = [c for c in cols if any(c in (e.get("intervals") or {}) for e in results["tokenizers"].values())]
    swept = [k for _, k in summary_columns(results) if k.startswith(SWEPT)]
    w.writerow(["tokenizer", *[k[len(SWEPT):] for k in swept], *cols, *[f"{c}_{end}95" for c in spread for end in ("lo", "hi")], "random_parts",
                "flags"])
    for name, e in results["tokenizers"].items():
        ci = e.get("intervals") or {}
        w.writerow([name, *[(e.get("swept") or {}).get(k[len(SWEPT):], "") for k in swept],
                    *[e["metrics"].get(c, "") for c in cols],
                    *[(ci.get(c) or ["", ""])[i] for c in spread for i in (0, 1)], " ".join(e.get("random_parts") or []),
                    "; ".join(f"{k}: {why}" for k, why in (e.get("flags") or {}).items())])
    return buf.getvalue()


def run_bench(opts: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    return Bench(opts, console).run()
