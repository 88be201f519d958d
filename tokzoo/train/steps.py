"""One training step: the tokenizer's optimiser step over ``grad_accum``
batches (forward through the recipe, finite-loss check, backward, clip,
update), then the recipe's discriminator on the same reconstructions."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from tokzoo.data import SkipCounter
from tokzoo.errors import DataError, TokzooError, check_returns
from tokzoo.train.optim import StageOptimisers
from tokzoo.train.recipe import Recipe, StepContext, StepResult


class NonFiniteLossError(TokzooError):
    exit_code = 3


class Steps:
    def __init__(self, recipe: Recipe, tokenizer: torch.nn.Module, *, device: torch.device, accum: int,
                 grad_clip: float, amp: bool, world: int, skips: SkipCounter, class_names,
                 where_kept: Callable[[], str]):
        self.recipe, self.tokenizer, self.device = recipe, tokenizer, device
        self.accum, self.grad_clip, self.amp, self.world = accum, grad_clip, amp, world
        self.skips, self.class_names, self.where_kept = skips, class_names, where_kept
        self.model: torch.nn.Module = tokenizer  # DDP- or compile-wrapped per stage
        self.optimisers: StageOptimisers | None = None
        self.images = 0  # images of every rank since the last log line (the img/s shown)
        self.seen = 0  # readable training images this process has used

    def check_finite(self, terms: dict[str, torch.Tensor], step: int, stage: str) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(f"loss term '{name}' became {float(value.detach().float().mean())} at step "
                                         f"{step} (stage '{stage}'); stopping. {self.where_kept()}. "
                                         "Try a lower trainer.lr or trainer.grad_clip.")

    def generator(self, batches: Iterator[dict], ctx: StepContext) -> tuple[dict[str, float], list[tuple[dict, Any]]]:
        """One optimiser step of the tokenizer; (logs, [(batch, reconstruction)])."""
        opt = self.optimisers.opt
        logs: dict[str, float] = {}
        used = []
        opt.zero_grad(set_to_none=True)
        for _ in range(self.accum):
            batch = next(batches)
            self.skips.add(batch)
            if "image" not in batch:
                continue
            batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            batch["class_names"] = self.class_names
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                res = self.recipe.generator_step(self.model, self.tokenizer, batch, ctx)
            check_returns(self.recipe, "generator_step", res, StepResult, "tokzoo.train.StepResult")
            self.check_finite(res.terms, ctx.step, ctx.stage.name)
            (res.loss / self.accum).backward()
            for k, v in res.terms.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / self.accum
            used.append((batch, res.recon))
            self.images += len(batch["image"]) * self.world
            self.seen += len(batch["image"])
        if not used and self.seen == 0:  # every sample so far was unreadable
            raise DataError(f"no readable image in the training data so far ({len(self.skips.skipped)} "
                            f"skipped as unreadable, see the warnings above); check data.path")
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.grad_clip)
        opt.step()
        self.optimisers.sched.step()
        return logs, used

    def discriminator(self, used: list[tuple[dict, Any]], ctx: StepContext) -> dict[str, float]:
        """One optimiser step of the recipe's discriminator (if any) on this step's reconstructions."""
        disc_opt = self.optimisers.disc_opt
        if disc_opt is None:
            return {}
        logs: dict[str, float] = {}
        disc_opt.zero_grad(set_to_none=True)
        for batch, recon in used:
            if recon is None:
                continue
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                d = self.recipe.discriminator_step(batch, recon.detach(), ctx)
            if d is None:
                continue
            self.check_finite(d.terms, ctx.step, ctx.stage.name)
            (d.loss / self.accum).backward()
            for k, v in d.terms.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / self.accum
        if self.world > 1:  # the discriminator is not wrapped in DDP: average its gradients by hand
            for p in self.recipe.discriminator().parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        disc_opt.step()
        return logs
