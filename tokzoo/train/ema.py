"""An exponential moving average of the tokenizer's trainable weights (frozen
pretrained parts are their own average: never copied)."""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float, frozen: tuple[str, ...] = ()):
        self.decay, self.frozen = decay, frozen
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items() if not self.is_frozen(k)}

    def is_frozen(self, key: str) -> bool:
        return bool(self.frozen) and key.startswith(self.frozen)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        state = module.state_dict()
        for k, avg in self.state.items():
            v = state[k]
            if v.dtype.is_floating_point:
                avg.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                avg.copy_(v)

    def load(self, saved: dict[str, torch.Tensor], module: torch.nn.Module, device) -> None:
        """Take the averages of a checkpoint (``saved``: the module's keys)."""
        self.state = {k: saved[k].to(device) for k in module.state_dict() if not self.is_frozen(k)}
