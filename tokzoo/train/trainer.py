"""The generic multi-stage trainer.

Readable top to bottom: build everything from the config, then for each stage
of the recipe freeze what the stage does not train, make the optimisers, and
loop: batch -> recipe losses -> backward -> clip -> step, logging to the
terminal (rich) and to ``metrics.jsonl``, checkpointing atomically. Under
``torchrun`` the model is wrapped in DDP (gloo on CPU, nccl on GPU), every
rank sees its own shard of each batch, losses are averaged across ranks for
the logs, and only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tokzoo.measures import psnr_per_image
from tokzoo.config import load_run_config
from tokzoo.device import dist_info, maybe_init_distributed, pick_device  # noqa: F401 (re-exported)
from tokzoo.data import SkipCounter, build_dataset, collate
from tokzoo.data.preprocess import to_uint8
from tokzoo.errors import CheckpointError, ConfigError, TokzooError
from tokzoo.pretrained import recording_references
from tokzoo.registry import build
from tokzoo import runfolder
from tokzoo.ckptio import RunLock, atomic_write, repair_latest
from tokzoo.train.checkpoint import (build_model_from_config, load_weights, read_config, read_module_state,
                                     read_trainer_state,
                                     resolve_checkpoint, save_checkpoint)
from tokzoo.errors import check_returns
from tokzoo.train.recipe import Recipe, Stage, StepContext, StepResult


class NonFiniteLossError(TokzooError):
    exit_code = 3


class TrainingInterrupted(TokzooError):
    """Ctrl-C or SIGTERM: a checkpoint was saved at the current step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


# -- data order: deterministic in the step, so a resumed run sees the same batches ---
class StepBatches(torch.utils.data.Sampler):
    """Yields index lists for steps ``start, start+1, ...``: epoch ``e`` is a
    permutation seeded by ``(seed, e)``; rank ``r`` takes its slice of each
    global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int, world: int):
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start_step, total_steps
        self.rank, self.world = rank, world
        self.global_bs = batch_size * world
        self.per_epoch = max(1, n // self.global_bs)

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=g), epoch
            chunk = perm[k * self.global_bs:(k + 1) * self.global_bs]
            if len(chunk) < self.global_bs:  # tiny datasets: wrap around
                chunk = perm[torch.arange(k * self.global_bs, (k + 1) * self.global_bs) % self.n]
            yield chunk[self.rank * self.bs:(self.rank + 1) * self.bs].tolist()


# -- the trainer ---------------------------------------------------------------------
class Trainer:
    def __init__(self, config: dict, console: Console | None = None):
        self.cfg = config
        self.tcfg = config["trainer"]
        self.console = console or Console()
        self.device = pick_device(self.tcfg["device"])
        maybe_init_distributed(self.device)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.run_dir = Path(config["run_dir"])
        torch.manual_seed(config["seed"])
        with recording_references() as refs:  # configs of checkpoints the model is built from
            self.tokenizer = build_model_from_config(config).to(self.device)
        config["references"] = refs  # stored with every checkpoint: the run rebuilds without them
        self.frozen = tuple(self.tokenizer.frozen_prefixes()) if hasattr(self.tokenizer, "frozen_prefixes") else ()
        self.recipe: Recipe = build("recipe", config["recipe"])
        self.stages: list[Stage] = self.recipe.stages()
        cap = self.tcfg["max_steps"]
        if cap > 0:
            for s in self.stages:
                s.steps = min(s.steps, cap)
        self.train_set = build_dataset(config["data"], "train")
        self.val_set = build_dataset(config["data"], "val")
        self.skips = SkipCounter(self.console)
        self._images_seen = 0  # readable training images this process has used
        self.step = 0  # global optimiser steps done
        self.stage_index, self.stage_step = 0, 0
        self.ema: dict[str, torch.Tensor] | None = None
        self.opt = self.disc_opt = None
        self.model: torch.nn.Module = self.tokenizer

    # -- set-up per stage ------------------------------------------------------
    def _enter_stage(self, index: int) -> None:
        stage = self.stages[index]
        groups = (self.tokenizer.trainable_groups() if hasattr(self.tokenizer, "trainable_groups")
                  else {"all": list(self.tokenizer.parameters())})
        unknown = [g for g in stage.train if g not in groups]
        if unknown:
            raise ConfigError(f"stage '{stage.name}' trains unknown parameter group '{unknown[0]}'; "
                              f"this tokenizer has: {', '.join(groups)}")
        self.tokenizer.requires_grad_(False)
        params: list[torch.nn.Parameter] = []
        seen: set[int] = set()
        for g in stage.train:
            for p in groups[g]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        for p in params:
            p.requires_grad_(True)
        self.recipe.setup(self.tokenizer, stage, self.device)
        params += [p for p in self.recipe.extra_parameters() if id(p) not in seen]
        lr = stage.lr or self.tcfg["lr"]
        betas = (self.tcfg["beta1"], self.tcfg["beta2"])
        self.opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=self.tcfg["weight_decay"])
        disc = self.recipe.discriminator()
        self.disc_opt = torch.optim.AdamW(disc.parameters(), lr=lr, betas=betas) if disc is not None else None
        warm, total = self.tcfg["warmup_steps"], stage.steps

        def schedule(s: int) -> float:
            if warm and s < warm:
                return (s + 1) / warm
            t = (s - warm) / max(1, total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.model = self.tokenizer
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.tokenizer, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        if self.tcfg["compile"]:
            self.model = torch.compile(self.model)
        if self.ema is None and self.tcfg["ema_decay"] > 0:  # frozen pretrained parts: their EMA is themselves
            self.ema = {k: v.detach().clone() for k, v in self.tokenizer.state_dict().items() if not self._is_frozen(k)}

    # -- checkpoints -------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step, "stage_index": self.stage_index, "stage_step": self.stage_step,
            "optimizer": self.opt.state_dict() if self.opt else None,
            "disc_optimizer": self.disc_opt.state_dict() if self.disc_opt else None,
            "scheduler": self.sched.state_dict() if self.opt else None,
            "recipe": self.recipe.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "metrics_bytes": (self.run_dir / "metrics.jsonl").stat().st_size
            if (self.run_dir / "metrics.jsonl").is_file() else 0,
        }

    def _truncate_metrics(self, size: int | None) -> None:
        """Cut metrics.jsonl back to what it held when the checkpoint was saved,
        so every step the resumed run logs again appears once."""
        f = self.run_dir / "metrics.jsonl"
        if not f.is_file():
            return
        if size is None:  # checkpoints written before the size was recorded: keep records up to the step
            keep = []
            for line in f.read_text(errors="replace").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        keep.append(line)
                except ValueError:
                    continue
            atomic_write(f, "".join(k + "\n" for k in keep))
        elif f.stat().st_size > size:
            with open(f, "r+b") as fh:
                fh.truncate(size)

    def save(self, tag: str) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir, tag, self.tokenizer, self.cfg, self._trainer_state(), self.ema)
        if self.world > 1:
            dist.barrier()

    def restore(self, ckpt: Path, full: bool) -> None:
        load_weights(self.tokenizer, ckpt / "model.safetensors")
        if not full:
            return
        state = read_trainer_state(ckpt)
        self.step, self.stage_index, self.stage_step = state["step"], state["stage_index"], state["stage_step"]
        if self.is_main:
            self._truncate_metrics(state.get("metrics_bytes"))
        if self.stage_index < len(self.stages):
            self._enter_stage(self.stage_index)
            if state["optimizer"] is not None:
                self.opt.load_state_dict(state["optimizer"])
                self.sched.load_state_dict(state["scheduler"])
            if self.disc_opt is not None and state["disc_optimizer"] is not None:
                self.disc_opt.load_state_dict(state["disc_optimizer"])
        self.recipe.load_state_dict(state["recipe"])
        if (ckpt / "ema.safetensors").is_file() and self.tcfg["ema_decay"] > 0:
            ema = read_module_state(self.tokenizer, ckpt / "ema.safetensors")
            self.ema = {k: ema[k].to(self.device) for k in self.tokenizer.state_dict() if not self._is_frozen(k)}
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, tag: str) -> dict[str, float]:
        """PSNR (uint8, data range 255) of reconstructions of held-out images, and a grid."""
        custom = self.recipe.evaluate(self.tokenizer, self.train_set, self.val_set, self.device)
        if custom is not None:
            return custom
        n = min(self.tcfg["eval_images"], len(self.val_set))
        was = self.tokenizer.training
        self.tokenizer.eval()
        psnr_sum, count, first = 0.0, 0, None
        for start in range(0, n, self.tcfg["batch_size"]):
            batch = collate([self.val_set[i] for i in range(start, min(n, start + self.tcfg["batch_size"]))])
            if "image" not in batch:
                continue
            x = batch["image"].to(self.device)
            r = self.tokenizer.reconstruct(x)
            psnr_sum += float(psnr_per_image(to_uint8(x), to_uint8(r)).sum())
            count += len(x)
            if first is None:
                first = (x[:8].cpu(), r[:8].cpu())
        self.tokenizer.train(was)
        result = {"eval/psnr": psnr_sum / max(1, count)}
        if first is not None and self.is_main:
            from torchvision.utils import save_image

            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            save_image(torch.cat(first), self.run_dir / "samples" / f"{tag}.png", nrow=len(first[0]))
        return result

    # -- logging -------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _reduce(self, terms: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return terms
        keys = sorted(terms)
        t = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t)}

    # -- the loop ------------------------------------------------------------------------
    def train(self, resume: bool = False, start_stage: int | None = None) -> dict[str, float]:
        created = not self.run_dir.exists()
        lock = RunLock(self.run_dir)
        if self.is_main:  # one writer per run folder; refused before anything is written
            self.run_dir.mkdir(parents=True, exist_ok=True)
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

    def _start(self, resume: bool, start_stage: int | None) -> None:
        """Every check that may refuse the command, then the run's config is written."""
        if resume:
            if self.is_main:
                repair_latest(self.run_dir)  # a kill while a tag was replaced: put it back
            if self.world > 1:
                dist.barrier()
            ckpt = resolve_checkpoint(self.run_dir)
            self._check_same_config(ckpt)
            self.restore(ckpt, full=True)
            self.console.print(f"resumed from {ckpt} at step {self.step}")
        elif start_stage is not None:
            if start_stage < 1 or start_stage > len(self.stages):
                raise ConfigError(f"--stage must be between 1 and {len(self.stages)}")
            if start_stage > 1:
                prev = runfolder.checkpoint(self.run_dir, runfolder.final_tag(start_stage - 1))
                if self._stage_started(start_stage - 1):
                    here = runfolder.latest_tag(self.run_dir)
                    raise ConfigError(f"{self.run_dir} already holds checkpoints past stage {start_stage - 1} "
                                      f"(latest: {here}); use --resume to continue, or set run_dir=... to run "
                                      f"stage {start_stage} again in a new folder (nothing was overwritten)")
                init = self.cfg.get("init_from") or prev
                ckpt = resolve_checkpoint(init)
                self.restore(ckpt, full=False)
                self.stage_index = start_stage - 1
                self.step = sum(s.steps for s in self.stages[: self.stage_index])
                self.console.print(f"stage {start_stage} starts from {ckpt}")
        elif runfolder.has_checkpoint(self.run_dir):  # also when fine-tuning: never over a run
            raise ConfigError(f"{self.run_dir} already holds a run; use --resume to continue it, "
                              f"or set run_dir=... to start a new one (nothing was overwritten)")
        elif self.cfg.get("init_from"):
            ckpt = resolve_checkpoint(self.cfg["init_from"])
            self.restore(ckpt, full=False)
            self.console.print(f"fine-tuning from {ckpt}")
        if self.is_main:
            atomic_write(self.run_dir / runfolder.CONFIG, json.dumps(self.cfg, indent=2))

    def _stage_started(self, index: int) -> bool:
        """Whether this run folder's latest checkpoint is past the start of stage
        ``index`` (0-based): a step of it or of a later stage was trained."""
        if not runfolder.latest_file(self.run_dir).is_file():
            return False
        ckpt = resolve_checkpoint(self.run_dir)
        if ckpt.name == runfolder.final_tag(index):
            return False  # exactly where the stage starts
        state = read_trainer_state(ckpt, mmap=True)
        at, step = int(state.get("stage_index", 0)), int(state.get("stage_step", 0))
        return at > index or (at == index and step > 0)

    def _train_stages(self) -> dict[str, float]:
        results: dict[str, float] = {}
        while self.stage_index < len(self.stages):
            done = runfolder.checkpoint(self.run_dir, runfolder.final_tag(self.stage_index + 1))
            if self.stage_step >= self.stages[self.stage_index].steps > 0 and (done / "model.safetensors").is_file():
                # resumed from a finished stage: it is not evaluated or saved again
                self.stage_index += 1
                self.stage_step = 0
                self.opt = None
                continue
            if self.opt is None or self.stage_step == 0:
                self._enter_stage(self.stage_index)
            results.update(self._run_stage())
            self.stage_index += 1
            self.stage_step = 0
            self.opt = None
        if self.is_main:  # every stage done: bench may take this run as finished
            atomic_write(runfolder.finished_file(self.run_dir), runfolder.final_tag(len(self.stages)) + "\n")
        if self.world > 1:
            dist.barrier()
        return results

    def _check_same_config(self, ckpt: Path) -> None:
        saved = read_config(ckpt)
        for key in ("model", "recipe", "data", "seed"):
            if saved.get(key) != self.cfg.get(key):
                raise CheckpointError(f"cannot resume {self.run_dir}: its '{key}' config differs from the one given "
                                      f"now; start a new run_dir or use the saved config")

    def _run_stage(self) -> dict[str, float]:
        """One stage, read top to bottom: evaluate, then the step loop, then evaluate and save."""
        stage = self.stages[self.stage_index]
        tag = runfolder.stage_tag(self.stage_index + 1)
        if self.stage_step == 0:
            before = self.evaluate(f"{tag}-start")
            self.log({"step": self.step, "stage": stage.name, **before})
            if self.is_main:
                self.console.print(f"[bold]stage {self.stage_index + 1}/{len(self.stages)}: {stage.name}[/] "
                                   f"({stage.steps} steps) - before: {_fmt(before)}")
        batches = self._batches(stage)
        amp = self.tcfg["precision"] == "bf16"  # on CPU too, so dtype errors surface without a GPU
        self.tokenizer.train()
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                            disable=not self.is_main)
        self._t_last, self._images = time.perf_counter(), 0
        with progress, self._signals_caught():
            task = progress.add_task(stage.name, total=stage.steps, completed=self.stage_step, info="")
            while self.stage_step < stage.steps:
                if self._stop_requested():
                    progress.stop()
                    self._save_and_stop(stage)
                ctx = StepContext(self.step, self.stage_step, stage, self.stage_index, self.device)
                # forward, backward, update (tokenizer, then discriminator)
                logs, used = self._generator_update(batches, ctx, amp)
                logs.update(self._discriminator_update(used, ctx, amp))
                self._update_ema()
                self.step += 1
                self.stage_step += 1
                # timing and logging
                if self.stage_step % self.tcfg["log_every"] == 0 or self.stage_step == stage.steps:
                    progress.update(task, info=self._log_step(stage, logs))
                progress.update(task, completed=self.stage_step)
                # periodic checkpoint (the stage's final one is written below)
                if self.stage_step % self.tcfg["ckpt_every"] == 0 and self.stage_step < stage.steps:
                    self.save(f"step-{self.step:08d}")
        after = self.evaluate(f"{tag}-end")
        self.log({"step": self.step, "stage": stage.name, **after})
        final = runfolder.final_tag(self.stage_index + 1)
        self.save(final)
        if self.is_main:
            self.console.print(f"stage {self.stage_index + 1} done: {_fmt(after)}; "
                               f"checkpoint {runfolder.checkpoint(self.run_dir, final)}")
            if self.skips.summary():
                self.console.print(f"[yellow]{self.skips.summary()}[/]")
        return {f"{tag}/{k}": v for k, v in after.items()}

    def _batches(self, stage: Stage) -> Iterator[dict]:
        """This rank's batches for the rest of the stage, deterministic in the step (resumable)."""
        accum = self.tcfg["grad_accum"]
        sampler = StepBatches(len(self.train_set), self.tcfg["batch_size"], self.cfg["seed"] + self.stage_index,
                              self.stage_step * accum, stage.steps * accum, self.rank, self.world)
        loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=self.tcfg["num_workers"],
                                             generator=torch.Generator().manual_seed(self.cfg["seed"]))
        return iter(loader)

    # -- Ctrl-C and SIGTERM: save the current step, say how to resume ---------------
    def _signals_caught(self):
        import contextlib

        @contextlib.contextmanager
        def caught():
            self._signal = 0
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handler(signum, frame):
                self._signal = signum
            old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, h in old.items():
                    signal.signal(sig, h)
        return caught()

    def _stop_requested(self) -> bool:
        flag = self._signal
        if self.world > 1:  # every rank stops after the same step
            t = torch.tensor([flag], dtype=torch.long, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t)
        self._signal = flag
        return bool(flag)

    def _save_and_stop(self, stage: Stage) -> None:
        tag = f"step-{self.step:08d}"
        if self.stage_step > 0 and not (runfolder.checkpoint(self.run_dir, tag) / "model.safetensors").is_file():
            self.save(tag)
        name = signal.Signals(self._signal).name
        where = runfolder.checkpoint(self.run_dir, tag)
        saved = (f"saved checkpoint {where}" if (where / "model.safetensors").is_file()
                 else "no checkpoint of this stage yet")
        preset = self.cfg.get("preset") or "PRESET"
        default = str(Path("runs") / preset)
        run_arg = "" if str(self.run_dir) == default else f" run_dir={self.run_dir}"
        raise TrainingInterrupted(f"{name} at step {self.step} of stage {self.stage_index + 1} ({stage.name}): "
                                  f"{saved}. Continue with: tokzoo train {preset} --resume{run_arg}",
                                  int(self._signal))

    def _generator_update(self, batches, ctx: StepContext, amp: bool) -> tuple[dict[str, float], list]:
        """One optimiser step of the tokenizer over ``grad_accum`` batches; (logs, [(batch, recon)])."""
        accum = self.tcfg["grad_accum"]
        logs: dict[str, float] = {}
        used = []
        self.opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            batch = next(batches)
            self.skips.add(batch)
            if "image" not in batch:
                continue
            batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            batch["class_names"] = getattr(self.train_set, "classes", None)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                res = self.recipe.generator_step(self.model, self.tokenizer, batch, ctx)
            check_returns(self.recipe, "generator_step", res, StepResult, "tokzoo.train.StepResult")
            self._check_finite(res.terms)
            (res.loss / accum).backward()
            for k, v in res.terms.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / accum
            used.append((batch, res.recon))
            self._images += len(batch["image"]) * self.world
            self._images_seen += len(batch["image"])
        if not used:  # every sample of this step was unreadable
            if self._images_seen == 0:
                from tokzoo.errors import DataError

                raise DataError(f"no readable image in the training data so far ({len(self.skips.skipped)} "
                                f"skipped as unreadable, see the warnings above); check data.path")
        if self.tcfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]],
                                           self.tcfg["grad_clip"])
        self.opt.step()
        self.sched.step()
        return logs, used

    def _discriminator_update(self, used: list, ctx: StepContext, amp: bool) -> dict[str, float]:
        """One optimiser step of the recipe's discriminator (if any) on this step's reconstructions."""
        if self.disc_opt is None:
            return {}
        accum = self.tcfg["grad_accum"]
        logs: dict[str, float] = {}
        self.disc_opt.zero_grad(set_to_none=True)
        for batch, recon in used:
            if recon is None:
                continue
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                d = self.recipe.discriminator_step(batch, recon.detach(), ctx)
            if d is None:
                continue
            self._check_finite(d.terms)
            (d.loss / accum).backward()
            for k, v in d.terms.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / accum
        if self.world > 1:  # the discriminator is not wrapped in DDP: average its gradients by hand
            for p in self.recipe.discriminator().parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        self.disc_opt.step()
        return logs

    def _log_step(self, stage: Stage, logs: dict[str, float]) -> str:
        """Append the step's losses (averaged over ranks) to metrics.jsonl; the progress-bar text."""
        logs = self._reduce(logs)
        now = time.perf_counter()
        rate = self._images / max(1e-9, now - self._t_last)
        self._t_last, self._images = now, 0
        self.log({"step": self.step, "stage": stage.name, "lr": self.sched.get_last_lr()[0], "images_per_s": rate,
                  **logs})
        return " ".join(f"{k}={v:.4f}" for k, v in logs.items()) + f" | {rate:.1f} img/s"

    def _check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                latest = runfolder.latest_tag(self.run_dir)
                kept = (f"the last good checkpoint is kept at {runfolder.checkpoint(self.run_dir, latest)}"
                        if latest else "no checkpoint had been written yet")
                raise NonFiniteLossError(f"loss term '{name}' became {float(value.detach().float().mean())} at step "
                                         f"{self.step} (stage '{self.stages[self.stage_index].name}'); stopping. {kept}. "
                                         "Try a lower trainer.lr or trainer.grad_clip.")

    def _is_frozen(self, key: str) -> bool:
        return bool(self.frozen) and key.startswith(self.frozen)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        d = self.tcfg["ema_decay"]
        state = self.tokenizer.state_dict()
        for k in self.ema:
            v = state[k]
            if v.dtype.is_floating_point:
                self.ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.ema[k].copy_(v)


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
    return trainer.train(resume=resume, start_stage=stage)
