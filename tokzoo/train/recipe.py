"""Training recipes: a list of stages and the losses of each.

A recipe is built from the YAML ``recipe:`` section through the registry. The
trainer calls, per stage: :meth:`Recipe.setup`, then per step
:meth:`Recipe.generator_step` (loss for the tokenizer's trainable groups) and,
when the recipe has a discriminator, :meth:`Recipe.discriminator_step`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tokzoo.api import Tokenizer


@dataclass
class Stage:
    """One stage: how many steps, which parameter groups train (the rest are frozen)."""

    name: str
    steps: int
    train: list[str] = field(default_factory=lambda: ["all"])
    lr: float | None = None  # None: the trainer's lr
    #: some trainable parameter gets no gradient in this stage's steps: under torchrun, DDP must look
    #: for them after every backward (find_unused_parameters), which costs a graph walk per step
    unused_parameters: bool = False


@dataclass
class StepResult:
    """A step's total loss, the named terms that make it up (for logs and the
    non-finite check), and the reconstruction the discriminator should see."""

    loss: Tensor
    terms: dict[str, Tensor]
    recon: Tensor | None = None


@dataclass
class StepContext:
    """What a recipe knows about the current step."""

    step: int  # global step, counted across stages
    stage_step: int  # step within the stage
    stage: Stage
    stage_index: int
    device: torch.device
    extras: dict[str, Any] = field(default_factory=dict)


class Recipe(abc.ABC):
    """Base class of training recipes."""

    @abc.abstractmethod
    def stages(self) -> list[Stage]: ...

    def setup(self, tokenizer: Tokenizer, stage: Stage, device: torch.device) -> None:
        """Called at the start of each stage (load loss networks, teachers, ...)."""

    def discriminator(self) -> nn.Module | None:
        """An adversary trained by :meth:`discriminator_step` with its own optimiser."""
        return None

    @abc.abstractmethod
    def generator_step(self, model: nn.Module, tokenizer: Tokenizer, batch: dict, ctx: StepContext) -> StepResult:
        """Loss for the tokenizer. ``model`` is the (possibly DDP-wrapped) tokenizer to call."""

    def discriminator_step(self, batch: dict, recon: Tensor, ctx: StepContext) -> StepResult | None:
        """Loss for the discriminator, or None to skip this step."""
        return None

    def loss_networks(self) -> list[nn.Module]:
        """Networks the recipe runs inside its losses (LPIPS, a discriminator), after
        :meth:`setup`: the trainer puts them in the trainer's memory format and,
        with ``trainer.compile``, compiles them in place (their state keys unchanged)."""
        return []

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters the recipe itself learns with the model (e.g. SigLIP's bias)."""
        return []

    def evaluate(self, model: nn.Module, train_set, val_set, device: torch.device) -> dict[str, float] | None:
        """Held-out metrics at the start and end of each stage; None: the
        trainer's default (reconstruction PSNR for tokenizers)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        d = self.discriminator()
        state: dict[str, Any] = {"extra": [p.detach().cpu() for p in self.extra_parameters()]}
        if d is not None:
            state["discriminator"] = d.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        d = self.discriminator()
        if d is not None and "discriminator" in state:
            d.load_state_dict(state["discriminator"])
        with torch.no_grad():
            for p, saved in zip(self.extra_parameters(), state.get("extra", [])):
                p.copy_(saved)
