"""Codebook usage while training, so that a collapse is seen when it happens.

A forward hook on the tokenizer keeps the codes of every training forward
pass (any tokenizer whose ``forward`` returns a :class:`TokenizerOutput`,
whichever recipe calls it; the first of each stage is checked: integer codes
inside their vocabulary, else a ContractError naming the tokenizer); at each logged step the codes of the last
``WINDOW`` steps are counted per level (a hierarchical child over the whole
parent x child table, as the bench counts it): usage (the fraction of codes
used) and perplexity go to metrics.jsonl, the lowest usage to the progress
line, every level's to the stage's summary line. A level whose usage over a
full window falls below ``COLLAPSED`` (or to a single code) gets one warning
per stage naming it, its usage and the usual remedies. Under ``torchrun``:
the first process's batches.
"""
from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

from tokzoo.codes import Latents, check_codes, check_latents

#: steps counted together (a batch alone sees too few tokens to say a code is unused)
WINDOW = 50
#: below this fraction of its codes used over a full window, a level has collapsed
COLLAPSED = 0.05

REMEDIES = ("usual remedies: restart unused codes (core vq: restart_unused=true; vector-quantize-pytorch: "
            "threshold_ema_dead_code=2), k-means initialisation (kmeans_init=true), EMA codebook updates "
            "(ema=true), l2-normalised or lower-dimensional codes, a smaller commitment weight")


class CodeUsage:
    def __init__(self, window: int | None = None, threshold: float | None = None):
        self.window = WINDOW if window is None else window
        self.threshold = COLLAPSED if threshold is None else threshold
        self.recent: deque[dict[str, Tensor]] = deque(maxlen=self.window)  # per step: level -> the ids used
        self.pending: dict[str, list[Tensor]] = {}
        self.vocab: dict[str, int] = {}
        self.warned: set[str] = set()
        self.checked = False
        self.first: tuple | None = None  # (codes, module) of the stage's first training pass, until checked
        self.stats: dict[str, Tensor | float] = {}  # the last training pass's QuantizerOutput.stats (on the device)

    def attach(self, module: torch.nn.Module):
        return module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        quant = getattr(output, "quant", None)
        if not module.training or quant is None:
            return
        self.stats = dict(getattr(quant, "stats", None) or {})
        codes = quant.codes
        if not self.checked:  # the first training pass of a stage: integer codes inside the vocabulary
            self.first = (codes, module)
            if not torch.compiler.is_compiling():  # a compiled pass is checked by end_step, outside the graph
                self._check_first()
        if isinstance(codes, Latents):  # a continuous tokenizer: latents, no codes to count
            return
        levels, vocab = dict(codes.levels), dict(codes.vocab)
        if codes.layout == "hierarchical" and len(levels) == 2:
            parent, child = list(levels)
            levels[child] = levels[parent] * vocab[child] + levels[child]
            vocab[child] = vocab[parent] * vocab[child]
        for lvl, c in levels.items():
            self.pending.setdefault(lvl, []).append(c.detach().reshape(-1))
        self.vocab.update(vocab)

    def _check_first(self) -> None:
        codes, module = self.first
        if isinstance(codes, Latents):
            check_latents(codes, module, method="forward")
        else:
            check_codes(codes, module, method="forward")
        self.checked, self.first = True, None

    def end_step(self) -> None:
        if not self.checked and self.first is not None:
            self._check_first()
        if self.pending:
            self.recent.append({lvl: torch.cat(v) for lvl, v in self.pending.items()})
        self.pending = {}

    def new_stage(self) -> None:
        self.recent.clear()
        self.pending, self.warned, self.checked, self.stats, self.first = {}, set(), False, {}, None

    def summary(self) -> dict[str, float]:
        """``usage/<level>`` and ``perplexity/<level>`` over the steps in the window, and
        the quantizer's own ``stats`` of the last training pass as ``batch/<name>``
        (e.g. ``batch/perplexity/code``). Read on the host: called at log lines."""
        out = {}
        if self.stats:
            values = [v.detach().double().mean().cpu() if torch.is_tensor(v)
                      else torch.tensor(float(v), dtype=torch.float64) for v in self.stats.values()]
            out.update({f"batch/{k}": r for k, r in zip(self.stats, torch.stack(values).tolist())})
        for lvl, k in self.vocab.items():
            parts = [s[lvl] for s in self.recent if lvl in s]
            if not parts or k < 1:
                continue
            counts = torch.unique(torch.cat(parts), return_counts=True)[1].double()
            p = counts / counts.sum()
            out[f"usage/{lvl}"] = len(counts) / k
            out[f"perplexity/{lvl}"] = float(torch.exp(-(p * p.log()).sum()))
        return out

    def collapsed(self, summary: dict[str, float]) -> list[str]:
        """One warning line per level newly collapsed over a full window (once per stage)."""
        if len(self.recent) < self.window:
            return []
        lines = []
        for lvl, k in self.vocab.items():
            used = summary.get(f"usage/{lvl}")
            if used is None or lvl in self.warned or k < 2:
                continue
            n = round(used * k)
            if used < self.threshold or n <= 1:
                self.warned.add(lvl)
                lines.append(f"codebook collapse at level '{lvl}': {n} of {k} codes ({100 * used:.3g} %) used "
                             f"over the last {self.window} steps; {REMEDIES}")
        return lines


def short(summary: dict[str, float]) -> str:
    """The progress line's part: the lowest usage of any level, e.g. ``use 8%``."""
    used = [v for k, v in summary.items() if k.startswith("usage/")]
    return f"use {100 * min(used):.3g}%" if used else ""


def per_level(summary: dict[str, float]) -> str:
    """The stage summary's part, e.g. ``codes used: semantic 99%, pixel 92%``."""
    used = [(k.split("/", 1)[1], v) for k, v in summary.items() if k.startswith("usage/")]
    return "codes used: " + ", ".join(f"{lvl} {100 * v:.3g}%" for lvl, v in used) if used else ""
