"""The generic multi-stage trainer.

Readable top to bottom: build everything from the config, then for each stage
of the recipe freeze what the stage does not train, make the optimisers, and
run :meth:`Trainer._run_stage`, one loop in one function: batch -> recipe
losses -> backward -> clip -> step -> discriminator -> EMA, logging to the
terminal (rich) and to ``metrics.jsonl``, checkpointing atomically. Under
``torchrun`` the model is wrapped in DDP (gloo on CPU, nccl on GPU), every
rank sees its own shard of each batch, losses are averaged across ranks for
the logs, and only rank 0 writes.

Written for the GPU: between two log lines the host reads no device value.
Loss terms and their non-finite flags stay on the device (:mod:`.lossmeter`)
and are read at the log line and before a checkpoint; codebook usage too
(:mod:`.usage`); under torchrun the stop signal is agreed at log lines.

Its rooms: :mod:`.sampler` (the data order), :mod:`.optim` (a stage's
optimisers and schedule), :mod:`.lossmeter`, :mod:`.ema`, :mod:`.evaluate`,
:mod:`.runlog` (metrics.jsonl), :mod:`.signals`; the run-folder layout is
:mod:`tokzoo.runfolder`.
"""
from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tokzoo import runfolder
from tokzoo.codes import check_declared
from tokzoo.ckptio import atomic_write, save_checkpoint
from tokzoo.runfolder import RunLock
from tokzoo.api import is_trainable
from tokzoo.config import load_run_config
from tokzoo.data import SkipCounter, build_dataset
from tokzoo.device import average_gradients, dist_info, maybe_init_distributed, pick_device
from tokzoo.errors import ConfigError, DataError, check_returns
from tokzoo.models import build_model_from_config
from tokzoo.pretrained import recording_references
from tokzoo.registry import build
from tokzoo.train.ema import EMA
from tokzoo.train.evaluate import reconstruction_psnr
from tokzoo.train.optim import StageOptimisers, make_optimisers, trainable_parameters
from tokzoo.train.lossmeter import LossMeter, NonFiniteLossError, nonfinite_message
from tokzoo.train.recipe import Recipe, Stage, StepContext, StepResult
from tokzoo.train.runlog import MetricsLog
from tokzoo.train.sampler import StepBatches, step_loader, to_device
from tokzoo.train.runstart import RunStart
from tokzoo.train.signals import StopSignals, TrainingInterrupted
from tokzoo.train import usage
from tokzoo.train.usage import CodeUsage
from tokzoo.textsafe import console as esc
from tokzoo.workers import resolve_workers

__all__ = ["NonFiniteLossError", "StepBatches", "Trainer", "TrainingInterrupted", "run_training"]


class Trainer(RunStart):
    """A run: its config, model, recipe and data; :meth:`train` runs every stage.
    How a run starts (resume, a later stage, fine-tuning) and what a checkpoint
    keeps of the trainer: :class:`~tokzoo.train.runstart.RunStart`."""
    continue_with: list[str] | None = None  # the `tokzoo train` words that resume this run, overrides kept

    def __init__(self, config: dict, console: Console | None = None):
        self.cfg = config
        self.tcfg = config["trainer"]
        self.console = console or Console()
        self.device = pick_device(self.tcfg["device"])
        maybe_init_distributed(self.device)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.run_dir = Path(config["run_dir"])
        runfolder.check_output_folder(self.run_dir, "run_dir")
        if self.device.type == "cuda":  # recorded in the run's config (trainer.tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(self.tcfg["tf32"])
        self.memory_format = (torch.channels_last if self.tcfg["memory_format"] == "channels_last" or
                              (self.tcfg["memory_format"] == "auto" and self.device.type == "cuda")
                              else torch.contiguous_format)
        torch.manual_seed(config["seed"])
        with recording_references() as refs:  # configs of checkpoints the model is built from
            self.tokenizer = build_model_from_config(config).to(self.device, memory_format=self.memory_format)
        config["references"] = refs  # stored with every checkpoint: the run rebuilds without them
        if not is_trainable(self.tokenizer):  # a bench-only tokenizer: refused before anything is written
            raise ConfigError(f"'{config['model'].get('name')}' ({type(self.tokenizer).__name__}) defines no training "
                              "pass (Tokenizer.forward): it can be benched, not trained")
        if config.get("model_kind", "tokenizer") == "tokenizer":  # a vocabulary as the contract says, now
            check_declared(getattr(self.tokenizer, "info", None), self.tokenizer)
        self.frozen = tuple(self.tokenizer.frozen_prefixes()) if hasattr(self.tokenizer, "frozen_prefixes") else ()
        # parameters the model built without gradients (EMA codebooks, a frozen teacher): no stage turns them on
        self.fixed = {id(p) for p in self.tokenizer.parameters() if not p.requires_grad}
        if self.tcfg["checkpoint_activations"]:  # blocks that offer it recompute their activations in backward
            for m in self.tokenizer.modules():
                if hasattr(m, "checkpoint_activations"):
                    m.checkpoint_activations = True
        self.recipe: Recipe = build("recipe", config["recipe"])
        self.stages: list[Stage] = self.recipe.stages()
        cap = self.tcfg["max_steps"]
        if cap > 0:
            for s in self.stages:
                s.steps = min(s.steps, cap)
        self.train_set = build_dataset(config["data"], "train")
        self.val_set = build_dataset(config["data"], "val")
        self.skips = SkipCounter(self.console)
        self.metrics_log = MetricsLog(self.run_dir, enabled=self.is_main)
        self.class_names = getattr(self.train_set, "classes", None)
        self.usage = CodeUsage()  # codebook usage over recent steps: a collapse is said when it happens
        if self.is_main:
            self.usage.attach(self.tokenizer)
        self.step = 0  # global optimiser steps done, counted across stages
        self.stage_index, self.stage_step = 0, 0  # the stage under way, and its steps done
        self.seen = 0  # readable training images this process has used
        # what _enter_stage makes for the stage under way (None between stages)
        self.entered: int | None = None
        self.optimisers: StageOptimisers | None = None
        self.model: torch.nn.Module = self.tokenizer  # what the recipe calls: DDP- and compile-wrapped
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self.ema: EMA | None = None

    # -- set-up per stage ------------------------------------------------------
    def _enter_stage(self, index: int) -> None:
        """Freeze what stage ``index`` does not train; its optimisers, DDP / compile wrapping, EMA."""
        stage = self.stages[index]
        params = trainable_parameters(self.tokenizer, stage, self.fixed)
        self.recipe.setup(self.tokenizer, stage, self.device)
        for net in self.recipe.loss_networks():  # LPIPS, the discriminator: as the tokenizer runs
            net.to(memory_format=self.memory_format)
            if self.tcfg["compile"] and getattr(net, "_compiled_call_impl", None) is None:
                net.compile()  # in place: the state keys (and so checkpoints) stay as they are
        seen = {id(p) for p in params}
        params += [p for p in self.recipe.extra_parameters() if id(p) not in seen]
        self.optimisers = make_optimisers(params, self.recipe.discriminator(), stage, self.tcfg, self.device)
        model, self.ddp = self.tokenizer, None
        if self.world > 1:
            model = self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.tokenizer, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=stage.unused_parameters)
        if self.tcfg["compile"]:
            model = torch.compile(model)
        self.model = model
        if self.ema is None and self.tcfg["ema_decay"] > 0:  # frozen pretrained parts: their EMA is themselves
            self.ema = EMA(self.tokenizer, self.tcfg["ema_decay"], self.frozen)
        self.entered = index

    def _leave_stage(self) -> None:
        self.stage_index += 1
        self.stage_step = 0
        self.entered = None

    # -- checkpoints -------------------------------------------------------------
    def save(self, tag: str) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir, tag, self.tokenizer, self.cfg, self._trainer_state(),
                            self.ema.state if self.ema else None)
        if self.world > 1:
            dist.barrier()

    # -- evaluation and logging ----------------------------------------------------
    def evaluate(self, tag: str) -> dict[str, float]:
        """The recipe's evaluation, or PSNR of held-out reconstructions (and a grid)."""
        custom = self.recipe.evaluate(self.tokenizer, self.train_set, self.val_set, self.device)
        if custom is not None:
            return custom
        png = self.run_dir / "samples" / f"{tag}.png" if self.is_main else None
        return reconstruction_psnr(self.tokenizer, self.val_set, self.tcfg["eval_images"], self.tcfg["batch_size"],
                                   self.device, png)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics_log.append(record)

    def _read_losses(self, meter: LossMeter, stage: Stage) -> dict[str, float]:
        """The last step's loss terms, averaged over ranks: the host's one read of
        them (a sync). A term that was ever non-finite stops the run here, before
        anything is logged or saved, naming the term and the step."""
        names, values = meter.values()
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        read = values.tolist()
        if read[-1] > 0:  # a count of non-finite terms (summed over ranks)
            raise NonFiniteLossError(nonfinite_message(meter.first_bad(), stage.name, self._where_kept()))
        return dict(zip(names, read[:-1]))

    def _log_step(self, stage: Stage, meter: LossMeter, images: int) -> str:
        """Append the step's losses (averaged over ranks), rate, usage and memory to
        metrics.jsonl; the progress-bar text. ``images``: of every rank since the last log line."""
        logs = self._read_losses(meter, stage)
        now = time.perf_counter()
        rate = images / max(1e-9, now - self._t_last)
        self._t_last = now
        self._used = used = self.usage.summary()
        memory = {}
        if self.device.type == "cuda":  # the peak since the last log line, per image of this rank's batch
            memory = {"peak_gib": torch.cuda.max_memory_allocated(self.device) / 2 ** 30}
            memory["peak_gib_per_image"] = memory["peak_gib"] / self.tcfg["batch_size"]
            torch.cuda.reset_peak_memory_stats(self.device)
        self.log({"step": self.step, "stage": stage.name, "lr": self.optimisers.sched.get_last_lr()[0],
                  "images_per_s": rate, **logs, **used, **memory})
        for line in self.usage.collapsed(used) if self.is_main else []:
            self.console.print(f"[bold yellow]warning:[/] {esc(line)}", highlight=False)
        return " ".join([*(f"{k}={v:.4f}" for k, v in logs.items()), usage.short(used)]).strip() + f" | {rate:.1f} img/s"

    # -- the run: checks, then the stages -------------------------------------------
    def train(self, resume: bool = False, start_stage: int | None = None) -> dict[str, float]:
        created = not self.run_dir.exists()
        lock = RunLock(self.run_dir)
        if self.is_main:  # one writer per run folder (made by the lock); refused before anything is written
            try:
                lock.acquire()
            except BaseException:
                if created:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise
        try:
            self._start(resume, start_stage)
            return self._train_stages()
        except BaseException:
            # a run that failed before its first checkpoint leaves no folder that looks like a run
            if created and self.is_main and not runfolder.checkpoints(self.run_dir).exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        finally:
            lock.release()

    def _train_stages(self) -> dict[str, float]:
        results: dict[str, float] = {}
        while self.stage_index < len(self.stages):
            final = runfolder.checkpoint(self.run_dir, runfolder.final_tag(self.stage_index + 1))
            if self.stage_step >= self.stages[self.stage_index].steps > 0 and (final / "model.safetensors").is_file():
                self._leave_stage()  # resumed from a finished stage: it is not evaluated or saved again
                continue
            if self.entered != self.stage_index or self.stage_step == 0:
                self._enter_stage(self.stage_index)
            try:
                results.update(self._run_stage())
            except RuntimeError as exc:  # DDP, the step after a parameter got no gradient
                if self.world > 1 and "find_unused_parameters" in str(exc):
                    stage = self.stages[self.stage_index]
                    raise ConfigError(f"stage '{stage.name}' of recipe '{self.cfg['recipe'].get('name')}' leaves a "
                                      "trainable parameter without a gradient, which DDP must be told: return "
                                      f"Stage('{stage.name}', ..., unused_parameters=True) from the recipe's "
                                      "stages(), or make the parameter untrainable (requires_grad=False)") from None
                raise
            self._leave_stage()
        if self.is_main:  # every stage done: bench may take this run as finished
            atomic_write(runfolder.finished_file(self.run_dir), runfolder.final_tag(len(self.stages)) + "\n")
        if self.world > 1:
            dist.barrier()
        return results

    # -- one stage, read top to bottom ----------------------------------------------
    def _run_stage(self) -> dict[str, float]:
        stage, tag = self.stages[self.stage_index], runfolder.stage_tag(self.stage_index + 1)
        accum, log_every, ckpt_every = self.tcfg["grad_accum"], self.tcfg["log_every"], self.tcfg["ckpt_every"]
        opt, sched, disc_opt = self.optimisers.opt, self.optimisers.sched, self.optimisers.disc_opt
        clipped = [p for g in opt.param_groups for p in g["params"]]  # the list clip_grad_norm_ walks
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.tcfg["precision"] == "bf16")
        # evaluate before the first step
        if self.stage_step == 0:
            before = self.evaluate(f"{tag}-start")
            self.log({"step": self.step, "stage": stage.name, **before})
            if self.is_main:
                self.console.print(f"[bold]stage {self.stage_index + 1}/{len(self.stages)}: {esc(stage.name)}[/] "
                                   f"({stage.steps} steps) - before: {_fmt(before)}")
        batches = self._batches(stage)
        self.tokenizer.train()
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                            disable=not self.is_main)
        meter = LossMeter(self.device)  # this stage's loss terms, on the device until a log line reads them
        images, self._t_last = 0, time.perf_counter()  # images of every rank since the last log line
        self.usage.new_stage()
        self._used: dict[str, float] = {}
        signals = StopSignals()
        with progress, signals.caught():
            task = progress.add_task(esc(stage.name), total=stage.steps, completed=self.stage_step, info="")
            while self.stage_step < stage.steps:
                ctx = StepContext(self.step, self.stage_step, stage, self.stage_index, self.device)
                # forward, backward: grad_accum micro-batches, gradients reduced across ranks on the last only
                opt.zero_grad(set_to_none=True)
                made = []  # (batch, reconstruction): what the discriminator sees
                for micro in range(accum):
                    batch = next(batches)
                    self.skips.add(batch)
                    if "image" not in batch:
                        continue  # every sample of this micro-batch was unreadable
                    batch = self._to_device(batch)
                    sync = self.ddp is None or micro == accum - 1
                    with contextlib.nullcontext() if sync else self.ddp.no_sync():
                        with autocast:
                            res = self.recipe.generator_step(self.model, self.tokenizer, batch, ctx)
                        check_returns(self.recipe, "generator_step", res, StepResult, "tokzoo.train.StepResult")
                        (res.loss / accum).backward()
                    meter.add(res.terms, self.step, accum)
                    made.append((batch, res.recon))
                    images += len(batch["image"]) * self.world
                    self.seen += len(batch["image"])
                if not made and self.seen == 0:
                    raise DataError(f"no readable image in the training data so far ({len(self.skips.skipped)} "
                                    f"skipped as unreadable, see the warnings above); check data.path")
                # update the tokenizer
                if self.tcfg["grad_clip"] > 0:
                    torch.nn.utils.clip_grad_norm_(clipped, self.tcfg["grad_clip"])
                opt.step()
                sched.step()
                # the discriminator: one update on this step's reconstructions
                if disc_opt is not None:
                    disc_opt.zero_grad(set_to_none=True)
                    for batch, recon in made:
                        if recon is None:
                            continue
                        with autocast:
                            d = self.recipe.discriminator_step(batch, recon.detach(), ctx)
                        if d is not None:
                            (d.loss / accum).backward()
                            meter.add(d.terms, self.step, accum)
                    average_gradients(self.recipe.discriminator(), self.world)  # it is not wrapped in DDP
                    disc_opt.step()
                # the step is done: EMA, usage window, counters
                meter.end_step()
                self.usage.end_step()
                if self.ema is not None:
                    self.ema.update()
                self.step += 1
                self.stage_step += 1
                # timing and logging: the only place the host reads device values (losses, usage, flags)
                at_log = self.stage_step % log_every == 0 or self.stage_step == stage.steps
                if at_log:
                    progress.update(task, info=self._log_step(stage, meter, images))
                    images = 0
                progress.update(task, completed=self.stage_step)
                # Ctrl-C / SIGTERM, between steps (under torchrun a collective: asked at log lines)
                if signals.requested(self.world, self.device, collective=at_log):
                    progress.stop()
                    self._save_and_stop(stage, signals, meter)
                # periodic checkpoint (the stage's final one is written below), never of a non-finite step
                if self.stage_step % ckpt_every == 0 and self.stage_step < stage.steps:
                    self._read_losses(meter, stage)
                    self.save(f"step-{self.step:08d}")
        # evaluate after the last step, save the stage's final checkpoint
        self._read_losses(meter, stage)
        after = self.evaluate(f"{tag}-end")
        self.log({"step": self.step, "stage": stage.name, **after})
        final = runfolder.final_tag(self.stage_index + 1)
        self.save(final)
        if self.is_main:
            codes = usage.per_level(self._used)
            self.console.print(f"stage {self.stage_index + 1} done: {_fmt(after)}; {esc(codes) + '; ' if codes else ''}"
                               f"checkpoint {esc(runfolder.checkpoint(self.run_dir, final))}", highlight=False,
                               soft_wrap=True)
            if self.skips.summary():
                self.console.print(f"[yellow]{self.skips.summary()}[/]")
        return {f"{tag}/{k}": v for k, v in after.items()}

    def _to_device(self, batch: dict) -> dict:
        return to_device(batch, self.device, self.memory_format, class_names=self.class_names)

    def _batches(self, stage: Stage) -> Iterator[dict]:
        """This rank's batches for the rest of the stage, deterministic in the step (resumable)."""
        accum = self.tcfg["grad_accum"]
        sampler = StepBatches(len(self.train_set), self.tcfg["batch_size"], self.cfg["seed"] + self.stage_index,
                              self.stage_step * accum, stage.steps * accum, self.rank, self.world)
        workers = resolve_workers(self.tcfg["num_workers"], self.device.type)
        return step_loader(self.train_set, sampler, workers, self.device, self.cfg["seed"])

    def _save_and_stop(self, stage: Stage, signals: StopSignals, meter: LossMeter) -> None:
        """Save the current step (unless saved already, never a non-finite one), then say how to resume."""
        tag = f"step-{self.step:08d}"
        where = runfolder.checkpoint(self.run_dir, tag)
        if self.stage_step > 0 and not (where / "model.safetensors").is_file():
            self._read_losses(meter, stage)
            self.save(tag)
        saved = f"saved checkpoint {where}" if (where / "model.safetensors").is_file() else "no checkpoint yet"
        again = shlex.join(["tokzoo", "train", *(self.continue_with or [self.cfg.get("preset") or "PRESET",
                                                                         "--resume", f"run_dir={self.run_dir}"])])
        raise TrainingInterrupted(f"{signals.name} at step {self.step} of stage {self.stage_index + 1} ({stage.name}): "
                                  f"{saved}. Continue with: {again}", int(signals.signum))


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items())


def run_training(name: str, overrides: list[str] | None = None, resume: bool = False, stage: int | None = None,
                 console: Console | None = None) -> dict[str, float]:
    """``tokzoo train NAME [overrides]``: load and validate the config, then train."""
    config = load_run_config(name, overrides or [])
    if not config.get("recipe"):
        raise ConfigError(f"'{name}' is a ready-made tokenizer (its preset has no recipe): there is nothing to "
                          f"train. Bench it directly: tokzoo bench --tokenizers {name}")
    trainer = Trainer(config, console)
    trainer.continue_with = [name, "--resume", *(overrides or [])]  # what "Continue with:" says after a stop
    return trainer.train(resume=resume, start_stage=stage)
