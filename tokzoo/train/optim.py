"""A stage's optimisers: its parameter groups (everything else frozen), AdamW
for the tokenizer and the recipe's discriminator, and the learning-rate
schedule (linear warm-up, then cosine down to a tenth)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tokzoo.errors import ConfigError


@dataclass
class StageOptimisers:
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    disc_opt: torch.optim.Optimizer | None

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "disc_optimizer": self.disc_opt.state_dict() if self.disc_opt else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["optimizer"] is not None:
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
        if self.disc_opt is not None and state["disc_optimizer"] is not None:
            self.disc_opt.load_state_dict(state["disc_optimizer"])


def trainable_parameters(tokenizer: torch.nn.Module, stage, fixed: set[int] = frozenset()) -> list[torch.nn.Parameter]:
    """Freeze the tokenizer but the parameter groups ``stage`` trains; those parameters, once each.
    ``fixed``: ids of parameters the model itself made untrainable (an EMA codebook): listed with their
    group (the optimiser's state keeps its layout) but left without gradients, so DDP waits for none."""
    groups = (tokenizer.trainable_groups() if hasattr(tokenizer, "trainable_groups")
              else {"all": list(tokenizer.parameters())})
    unknown = [g for g in stage.train if g not in groups]
    if unknown:
        raise ConfigError(f"stage '{stage.name}' trains unknown parameter group '{unknown[0]}'; "
                          f"this tokenizer has: {', '.join(groups)}")
    tokenizer.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for g in stage.train:
        for p in groups[g]:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    for p in params:
        p.requires_grad_(id(p) not in fixed)
    return params


def cosine_schedule(warm: int, total: int):
    """Step -> learning-rate factor: linear warm-up over ``warm`` steps, then cosine to 0.1 at ``total``."""
    def schedule(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        t = (s - warm) / max(1, total - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return schedule


def make_optimisers(params: list[torch.nn.Parameter], discriminator: torch.nn.Module | None, stage,
                    tcfg: dict[str, Any], device: torch.device | None = None) -> StageOptimisers:
    """AdamW over ``params`` (the stage's lr, or the trainer's) with the schedule; the discriminator's AdamW.
    On CUDA both are fused (one kernel for every parameter's update); elsewhere PyTorch's default."""
    lr = stage.lr or tcfg["lr"]
    betas = (tcfg["beta1"], tcfg["beta2"])
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=tcfg["weight_decay"], **fused)
    disc_opt = (torch.optim.AdamW(discriminator.parameters(), lr=lr, betas=betas, **fused)
                if discriminator is not None else None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(tcfg["warmup_steps"], stage.steps))
    return StageOptimisers(opt, sched, disc_opt)
