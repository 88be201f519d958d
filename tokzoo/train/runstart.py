"""How a training run starts and what a checkpoint keeps of the trainer: the
half of :class:`~tokzoo.train.trainer.Trainer` that is about the run folder.

Four ways in (:meth:`RunStart._start`): resume where the last checkpoint
stopped, a later stage from the previous one's final checkpoint, fine-tuning
from ``init_from``, or a new run; every check that may refuse the command
comes before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tokzoo import runfolder
from tokzoo.ckptio import load_weights, read_module_state, read_trainer_state, resolve_checkpoint, write_run_config
from tokzoo.errors import ConfigError
from tokzoo.runfolder import repair_latest
from tokzoo.textsafe import console as esc
from tokzoo.train.checks import check_batch_fits, check_resume
from tokzoo.train.ema import EMA


class RunStart:
    """Mixed into the Trainer (its attributes: cfg, tcfg, run_dir, tokenizer, stages, ...)."""

    def _trainer_state(self) -> dict[str, Any]:
        opts = self.optimisers if self.entered is not None else None
        return {
            "step": self.step, "stage_index": self.stage_index, "stage_step": self.stage_step,
            **(opts.state_dict() if opts else {"optimizer": None, "disc_optimizer": None, "scheduler": None}),
            "recipe": self.recipe.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "metrics_bytes": self.metrics_log.size(),
        }

    def restore(self, ckpt: Path, full: bool) -> None:
        """The weights of ``ckpt``; with ``full``, where it stopped too (steps,
        optimisers, recipe state, EMA, random state), metrics.jsonl cut back to then."""
        load_weights(self.tokenizer, ckpt / "model.safetensors")
        if not full:
            return
        state = read_trainer_state(ckpt)
        self.step, self.stage_index, self.stage_step = state["step"], state["stage_index"], state["stage_step"]
        if self.is_main:
            self.metrics_log.truncate(state.get("metrics_bytes"), self.step)
        if self.stage_index < len(self.stages):
            self._enter_stage(self.stage_index)
            self.optimisers.load_state_dict(state)
        self.recipe.load_state_dict(state["recipe"])
        if (ckpt / "ema.safetensors").is_file() and self.tcfg["ema_decay"] > 0:
            saved = read_module_state(self.tokenizer, ckpt / "ema.safetensors")
            self.ema = self.ema or EMA(self.tokenizer, self.tcfg["ema_decay"], self.frozen)
            self.ema.load(saved, self.tokenizer, self.device)
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _where_kept(self) -> str:
        latest = runfolder.latest_tag(self.run_dir)
        return (f"the last good checkpoint is kept at {runfolder.checkpoint(self.run_dir, latest)}"
                if latest else "no checkpoint had been written yet")

    def _start(self, resume: bool, start_stage: int | None) -> None:
        """Every check that may refuse the command, then the run's config is written.
        Four ways in: resume, a later stage, fine-tuning (init_from), a new run."""
        if resume:
            if self.is_main:
                repair_latest(self.run_dir)  # a kill while a tag was replaced: put it back
            if self.world > 1:
                dist.barrier()
            ckpt = resolve_checkpoint(self.run_dir)
            check_resume(self.run_dir, self.cfg, ckpt)
            self.restore(ckpt, full=True)
            self.console.print(f"resumed from {esc(ckpt)} at step {self.step}")
        elif start_stage is not None:
            if start_stage < 1 or start_stage > len(self.stages):
                raise ConfigError(f"--stage must be between 1 and {len(self.stages)}")
            if start_stage > 1:
                prev = runfolder.checkpoint(self.run_dir, runfolder.final_tag(start_stage - 1))
                if self._stage_started(start_stage - 1):
                    raise ConfigError(f"{self.run_dir} already holds checkpoints past stage {start_stage - 1} "
                                      f"(latest: {runfolder.latest_tag(self.run_dir)}); use --resume to continue, "
                                      f"or set run_dir=... to run stage {start_stage} again in a new folder "
                                      "(nothing was overwritten)")
                ckpt = resolve_checkpoint(self.cfg.get("init_from") or prev)
                self.restore(ckpt, full=False)
                self.stage_index = start_stage - 1
                self.step = sum(s.steps for s in self.stages[: self.stage_index])
                self.console.print(f"stage {start_stage} starts from {esc(ckpt)}")
        elif runfolder.has_checkpoint(self.run_dir):  # also when fine-tuning: never over a run
            raise ConfigError(f"{self.run_dir} already holds a run; use --resume to continue it, "
                              f"or set run_dir=... to start a new one (nothing was overwritten)")
        elif self.cfg.get("init_from"):
            ckpt = resolve_checkpoint(self.cfg["init_from"])
            self.restore(ckpt, full=False)
            self.console.print(f"fine-tuning from {esc(ckpt)}")
        check_batch_fits(self.tokenizer, self.train_set, self.tcfg["batch_size"], self.device)
        if self.is_main:
            write_run_config(self.run_dir, self.cfg)

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
