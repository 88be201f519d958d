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

This file is the loop, read top to bottom; its rooms: :mod:`.options` (what
was asked), :mod:`.resolve` (which tokenizer, its identity), :mod:`.measure`
(one tokenizer's pass), :mod:`.protocol`, :mod:`.results` (merge with the
folder's earlier results), :mod:`.outputs` (every file written).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console

from tokzoo.api import BenchContext
from tokzoo.bench import measure
from tokzoo.bench.collectives import Collectives
from tokzoo.bench.options import BenchOptions, check_options, workers_of
from tokzoo.bench.outputs import stored_rows, write_outputs
from tokzoo.bench.protocol import PRECISIONS, protocol_block, protocol_key
from tokzoo.bench.render import render_table, row_key
from tokzoo.bench.resolve import identity, resolve_tokenizer
from tokzoo.bench.results import Entry, Results, assign_names, by_display_name, load_previous, sources
from tokzoo.ckptio import TEMP_FILE
from tokzoo.runfolder import RunLock
from tokzoo.data import SkipCounter, build_dataset, fingerprint
from tokzoo.device import dist_info, maybe_init_distributed, pick_device
from tokzoo.errors import ConfigError, DataError, OutputError
from tokzoo.pretrained import random_parts
from tokzoo.registry import get_registry
from tokzoo.weights import using_weights_dir
from tokzoo.textsafe import console as esc

__all__ = ["Bench", "BenchOptions", "run_bench"]


#: the files bench writes into --out (the only ones whose temporary files it may remove)
OWN_FILES = re.compile(r"results\.(json|md|csv)|report\.html|[a-z0-9_-]+\.png|grid_samples\.safetensors")
#: the skipped files' reasons kept in results.json per tokenizer (the count is always whole)
SKIPS_KEPT = 20


class Bench:
    def __init__(self, opts: BenchOptions, console: Console | None = None):
        check_options(opts)  # everything that may refuse the command, before any work
        self.opts = opts
        self.console = console or Console()
        self.device = pick_device(opts.device)
        maybe_init_distributed(self.device)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.out = Path(opts.out_dir)
        self.unavailable: dict[tuple[str, str], list[str]] = {}  # (metric, why) -> tokenizers measured now
        self.written: list[Path] = []
        self._datasets: dict[tuple[str, str], Any] = {}  # (spec, split) -> dataset, see _dataset
        self._prints: dict[tuple[str, str], str] = {}  # (spec, split) -> its fingerprint, see _fingerprint

    def run(self) -> dict[str, Any]:
        lock = RunLock(self.out, "results folder")
        if self.is_main:  # one bench per --out at a time: results are merged, never overwritten by another
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                probe = self.out / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")  # a folder we cannot write to fails now, before any measuring
                probe.unlink()
            except (OSError, OutputError) as exc:  # not allowed, a read-only or special file system, a file
                lock.release()                          # in the way
                raise ConfigError(f"--out {self.out}: cannot write there ({getattr(exc, 'strerror', None) or exc}); "
                                  "choose a folder you can write to") from None
            for junk in self.out.glob(".*.tmp"):  # left by a bench killed mid-write: its own names only
                own = TEMP_FILE.fullmatch(junk.name)
                if own and OWN_FILES.fullmatch(own["name"]):
                    junk.unlink(missing_ok=True)
        try:
            with measure.tf32(self.device, self.precision()[1]):  # fp32 means TF32 off; put back afterwards
                return self._run()
        finally:
            lock.release()

    def precision(self) -> tuple[Any, bool]:
        """(autocast dtype or None, TF32) of ``--precision``."""
        dtype, tf32 = PRECISIONS[self.opts.precision]
        return (getattr(torch, dtype) if dtype else None), tf32

    def _run(self) -> Results:
        o = self.opts
        # earlier results in --out under this protocol are merged; every grid row measured there is kept
        results = load_previous(self.out / "results.json", self.protocol({"tokenizers": {}}, asked=True), o.tokenizers,
                                lambda msg: self.console.print(msg, highlight=False))
        grid_rows = stored_rows(self.out)
        for old, new in by_display_name(results).items():  # a file keyed by paths: its rows follow their names
            for key in [k for k in grid_rows if k == row_key(old) or k.endswith(":" + row_key(old))]:
                grid_rows[key[:-len(row_key(old))] + row_key(new)] = grid_rows.pop(key)
        # one name per tokenizer: the results.json key and every output's label (a path is kept in the entry)
        names = assign_names(o.tokenizers, sources(results))
        originals_now = written = False
        # each tokenizer: resolve, reuse a finished result or measure, write every output
        for typed in o.tokenizers:
            with using_weights_dir(o.weights_dir):  # ready-made tokenizers find released files there
                tok = resolve_tokenizer(typed, self.device)
            name = names[typed]
            ident = identity(tok, o)
            prev = results["tokenizers"].get(name)
            if prev and prev.get("identity") == ident and prev.get("protocol_key") == self._protocol_key(tok) \
                    and prev.get("data_fingerprints") == self._fingerprints(tok, prev.get("data_fingerprints")):
                self.console.print(f"[dim]{esc(name)}: reusing finished results from {esc(self.out / 'results.json')}[/]",
                                   highlight=False)
                written = False
                continue
            entry, originals, recons, pictures = self._bench_one(name, tok)
            entry["identity"] = ident
            if typed != name:
                entry["path"] = typed
            if typed in o.swept:
                entry["swept"] = o.swept[typed]
            results["tokenizers"][name] = entry
            if not originals_now:  # the first row: this run's originals
                grid_rows["originals"], originals_now = originals, True
            grid_rows[row_key(name)] = recons.contiguous()
            for picture, images in pictures.items():  # a metric's pictures, one row per tokenizer
                grid_rows[f"{picture}:{row_key(name)}"] = images.contiguous()
            if self.is_main:  # after every tokenizer: a killed bench keeps what it finished
                self._write(results, grid_rows)
            written = True
        if self.world > 1:
            dist.barrier()
        # the table, what was unavailable and why, and where the files are
        if self.is_main:
            if not written:  # what the last tokenizer's write did not already hold
                self._write(results, grid_rows)
            self._summarise(results)
        return results

    def _summarise(self, results: dict[str, Any]) -> None:
        self.console.print(render_table(results, width=self.console.width))
        for (m, why), names in self.unavailable.items():
            who = ", ".join(names)
            self.console.print(f"[yellow]{esc(m)} unavailable[/] ({esc(who)}): {esc(why)}", highlight=False)
        for tname, e in results["tokenizers"].items():
            if e.get("random_parts"):
                self.console.print(f"[bold yellow]warning:[/] {esc(tname)} was measured with deliberately RANDOM "
                                   f"pretrained parts ({esc(', '.join(e['random_parts']))}): not comparable with a "
                                   "real one", highlight=False)
        for f in [self.out / "results.json", self.out / "results.md", *self.written[2:]]:
            self.console.print(esc(f"{f.name:13s} {f}"), highlight=False, soft_wrap=True)

    def _fingerprints(self, tok, splits) -> dict[str, str]:
        """Each split's fingerprint now (images and labels), for the splits in ``splits``: the
        same as when an entry was measured, or the entry is measured again."""
        spec = measure.data_spec(self.opts.data, tok.info.resolution, self.opts.data_params)
        return {s: self._fingerprint(spec, s) for s in (splits or {"val": ""})}

    def _fingerprint(self, spec: dict[str, Any], split: str) -> str:
        """``fingerprint`` of a split, once per bench like the split itself (an image folder's
        is a stat of every file: never repeated for each tokenizer and each use)."""
        key = self._data_key(spec, split)
        if key not in self._prints:
            self._prints[key] = fingerprint(self._dataset(spec, split), spec)
        return self._prints[key]

    def _protocol_key(self, tok) -> str:
        return protocol_key(self.opts.data, self.opts.num_images, tok.info.resolution, self.opts.probe_train_images)

    def protocol(self, results: dict[str, Any], asked: bool = False) -> dict[str, Any]:
        """The protocol block of ``results``' entries; with ``asked``, of this
        bench's metric settings (before any entry is measured)."""
        metric_protocols = measure.metric_protocols(self.opts.metrics, self.opts.metric_params) if asked else None
        return protocol_block(list(results["tokenizers"].values()), metric_protocols=metric_protocols,
                              data=self.opts.data,
                              num_images=self.opts.num_images, probe_train_images=self.opts.probe_train_images,
                              world=self.world, device=str(self.device), plugins=get_registry().versions(),
                              precision=self.opts.precision)

    @staticmethod
    def _data_key(spec: dict[str, Any], split: str) -> tuple[str, str]:
        return json.dumps(spec, sort_keys=True, default=str), split

    def _dataset(self, spec: dict[str, Any], split: str):
        """``build_dataset(spec, split)``, built once per bench: tokenizers of one
        resolution share it (listing ImageNet's train/ costs about a minute)."""
        key = self._data_key(spec, split)
        if key not in self._datasets:
            from rich.errors import LiveError

            try:  # a spinner while a large folder is listed (nothing when another live display runs)
                with self.console.status(f"reading the {split} split of {self.opts.data} ...", spinner="line"):
                    self._datasets[key] = build_dataset(spec, split)
            except LiveError:
                self._datasets[key] = build_dataset(spec, split)
        return self._datasets[key]

    # -- one tokenizer ---------------------------------------------------------------------------
    def _bench_one(self, name: str, tok) -> tuple[Entry, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One tokenizer, read top to bottom: data, metrics, one streaming pass, results."""
        o, res = self.opts, tok.info.resolution
        # the images: the val split, at the tokenizer's resolution
        spec = measure.data_spec(o.data, res, o.data_params)
        val = self._dataset(spec, "val")
        n = len(val) if o.num_images == "all" else o.num_images
        if n > len(val):
            raise ConfigError(f"--num-images {n}: the val split of '{o.data}' has only {len(val)} images; "
                              f"ask for --num-images {len(val)} or --num-images all (a number measured on fewer "
                              "images than the protocol records would mislead)")
        # the metrics, and the reference statistics cached by an earlier bench of the same images
        dataset = self._fingerprint(spec, "val")
        ctx = BenchContext(device=self.device, weights_dir=o.weights_dir, batch_size=o.batch_size,
                           num_images=n, probe_train_images=o.probe_train_images,
                           train_split=lambda: measure.probe_train_split(spec, n, o.data, self._dataset),
                           num_classes=getattr(val, "num_classes", None), dataset=dataset, show_progress=self.is_main,
                           autocast=self.precision()[0])
        metrics, unavailable, weights = measure.make_metrics(o.metrics, o.metric_params, tok, ctx)
        cached = {m: measure.load_reference(m, metric, dataset, n, res) for m, metric in metrics.items()}
        # one pass over this rank's shard of the images: encode, decode, every metric sees each batch once
        skips, counts = SkipCounter(self.console), {"non_finite": 0}
        mine = torch.utils.data.Subset(val, list(range(n))[self.rank::self.world])
        grid_o, grid_r = measure.stream(name, tok, mine, metrics, unavailable, skips, device=self.device,
                                        batch_size=o.batch_size, grid_images=o.grid_images, console=self.console,
                                        workers=workers_of(o, self.device.type),
                                        show=self.is_main, counts=counts, autocast=self.precision()[0])
        skipped = list(skips.skipped)
        if self.world > 1:  # every process's skips: the count measured is the whole bench's
            parts = [None] * self.world
            dist.all_gather_object(parts, skipped)
            skipped = [x for part in parts for x in part]
        if len(skipped) >= n:
            raise DataError(f"{name}: none of the {n} images of '{o.data}' could be read "
                            f"({len(skipped)} skipped as unreadable)")
        # combine the processes, compute, cache reference statistics
        if self.world > 1:
            measure.reduce_across(metrics, Collectives(self.world, self.device))
        sources: dict[str, str] = {}
        values, intervals, better, flags, pictures = measure.compute(metrics, unavailable, sources)
        for m, (key, loaded) in cached.items():
            if key and not loaded and m in metrics and self.is_main:
                measure.save_reference(key, metrics[m].reference_state())
        # the entry of results.json (every key: bench.results.Entry)
        entry = Entry(
            metrics=values, intervals=intervals, better=better, unavailable=unavailable,
            info=tok.info.as_dict(), token_features=measure.features_kind(tok),
            # the images measured (not the number asked for), and the unreadable ones skipped among those asked
            resolution=res, num_images=n - len(skipped), dataset=dataset,
            skipped_images=len(skipped), skipped=skipped[:SKIPS_KEPT], extractors=weights,
            protocol_key=self._protocol_key(tok),
            # pretrained parts deliberately left random (pretrained: random): never a number to pass for a real one
            random_parts=random_parts((tok.config or {}).get("model")),
            metric_protocols={m: proto for m, metric in metrics.items() if (proto := metric.protocol())},
            # which metrics this bench asked for, and which one gave each result (compare tells a metric
            # not asked for from a result lost)
            asked=list(o.metrics), sources=sources,
            # a preset whose run never finished: the checkpoint it was benched from
            unfinished=getattr(tok, "unfinished", None),
            # the splits this bench read (train: when a probe trained on it), each re-checked before a reuse
            data_fingerprints={s: self._fingerprint(spec, s) for s in ("val", "train")
                               if self._data_key(spec, s) in self._datasets},
        )
        if counts["non_finite"]:  # a broken tokenizer: every number it gave is flagged with the reason
            why = (f"{counts['non_finite']} reconstruction(s) held NaN or Inf (measured clamped, as a saved image; "
                   "the tokenizer is broken)")
            flags = {**flags, **{k: why for k in values}}
        if flags:  # numbers that may mislead, with the reason, shown wherever they are
            entry["flags"] = {k: why for k, why in flags.items() if k in values}
        if entry["unfinished"]:
            self.console.print(f"[bold yellow]note:[/] {esc(name)}'s run has not finished; benched from its "
                               f"checkpoint '{esc(entry['unfinished'])}'", highlight=False)
        for m, why in unavailable.items():  # said once per reason, after the table
            self.unavailable.setdefault((m, why), []).append(name)
        k = o.grid_images
        if not grid_o:
            empty = torch.zeros(0, 3, res, res, dtype=torch.uint8)
            return entry, empty, empty, pictures
        return entry, torch.cat(grid_o)[:k], torch.cat(grid_r)[:k], pictures

    def _write(self, results: dict[str, Any], grid_rows: dict[str, torch.Tensor]) -> None:
        results["protocol"] = self.protocol(results)
        self.written = write_outputs(self.out, results, self.opts.baseline, grid_rows=grid_rows)


def run_bench(opts: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    return Bench(opts, console).run()
