"""An exponential moving average of the tokenizer's trainable weights (frozen
pretrained parts are their own average: never copied).

The module's tensors and their averages are paired once, in two flat lists
(floating-point and the rest); a step is one ``torch._foreach_*`` call per
list, ``avg = decay * avg + (1 - decay) * value`` as before, bit for bit."""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float, frozen: tuple[str, ...] = ()):
        self.decay, self.frozen = decay, frozen
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items() if not self.is_frozen(k)}
        self._pair(module)

    def is_frozen(self, key: str) -> bool:
        return bool(self.frozen) and key.startswith(self.frozen)

    def _pair(self, module: torch.nn.Module) -> None:
        """The flat lists of (average, live tensor), floating-point and not; the live
        tensors are the module's own storage (state_dict views), so this is done once."""
        live = module.state_dict(keep_vars=True)
        floats = [(avg, live[k].detach()) for k, avg in self.state.items() if avg.dtype.is_floating_point]
        others = [(avg, live[k].detach()) for k, avg in self.state.items() if not avg.dtype.is_floating_point]
        self._avg, self._val = [a for a, _ in floats], [v for _, v in floats]
        self._avg_other, self._val_other = [a for a, _ in others], [v for _, v in others]

    @torch.no_grad()
    def update(self) -> None:
        if self._avg:
            torch._foreach_mul_(self._avg, self.decay)
            torch._foreach_add_(self._avg, self._val, alpha=1 - self.decay)
        for avg, v in zip(self._avg_other, self._val_other):
            avg.copy_(v)

    def load(self, saved: dict[str, torch.Tensor], module: torch.nn.Module, device) -> None:
        """Take the averages of a checkpoint (``saved``: the module's keys)."""
        self.state = {k: saved[k].to(device) for k in module.state_dict() if not self.is_frozen(k)}
        self._pair(module)
