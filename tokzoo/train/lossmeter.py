"""A stage's loss terms, kept on the device between log lines.

Every micro-batch adds its terms here without reading them: the last step's
values (what the log line shows) and, per term, the first step at which it was
not finite, with its value. The host reads them in one go (:meth:`LossMeter.values`,
through the trainer's ``_read_losses``), at a log line and before a checkpoint is
written, so a non-finite step never reaches a checkpoint: the run stops naming
the term and the step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tokzoo.errors import TokzooError


class NonFiniteLossError(TokzooError):
    exit_code = 3


class LossMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.last: dict[str, Tensor] = {}  # the last finished step's terms (summed over its micro-batches)
        self.pending: dict[str, Tensor] = {}  # the step under way
        self.bad_step: dict[str, Tensor] = {}  # per term: the first step it was not finite, -1 while finite
        self.bad_value: dict[str, Tensor] = {}

    def add(self, terms: dict[str, Tensor], step: int, accum: int) -> None:
        """One micro-batch's terms (``accum`` micro-batches make a step). No host read."""
        for name, value in terms.items():
            v = value.detach().float().mean()
            self.pending[name] = self.pending[name] + v / accum if name in self.pending else v / accum
            first = self.bad_step.get(name)
            if first is None:
                first = self.bad_step[name] = torch.full((), -1, dtype=torch.long, device=v.device)
                self.bad_value[name] = torch.zeros((), device=v.device)
            newly = ~torch.isfinite(v) & (first < 0)
            self.bad_step[name] = torch.where(newly, step, first)
            self.bad_value[name] = torch.where(newly, v, self.bad_value[name])

    def end_step(self) -> None:
        self.last, self.pending = self.pending, {}

    def values(self) -> tuple[list[str], Tensor]:
        """The last step's term names and, on the device, their values followed by
        one count: how many terms have been non-finite (a sum across processes tells)."""
        names = sorted(self.last)
        flags = [(s >= 0).float() for s in self.bad_step.values()]
        parts = [self.last[n] for n in names] + [torch.stack(flags).sum() if flags else torch.zeros(())]
        return names, torch.stack([p.to(self.device, torch.float64) for p in parts])

    def first_bad(self) -> tuple[str, int, float] | None:
        """(term, step, value) of the earliest non-finite term of this process, or None (a host read)."""
        if not self.bad_step:
            return None
        names = list(self.bad_step)
        steps = torch.stack(list(self.bad_step.values())).tolist()
        values = torch.stack(list(self.bad_value.values())).tolist()
        seen = [(s, i) for i, s in enumerate(steps) if s >= 0]
        if not seen:
            return None
        step, i = min(seen)
        return names[i], step, values[i]


def nonfinite_message(bad: tuple[str, int, float] | None, stage: str, kept: str) -> str:
    """What the user reads when a loss term stopped being finite."""
    what = (f"loss term '{bad[0]}' became {bad[2]} at step {bad[1]}" if bad
            else "a loss term became non-finite in another process")
    return (f"{what} (stage '{stage}'); stopping. {kept}. Try a lower trainer.lr or trainer.grad_clip.")
