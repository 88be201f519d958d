"""Training and measuring the probes' GPT (:mod:`tokzoo.nn.gpt`): the one
training recipe (:func:`fit`, also the question probe's), teacher-forced NLL,
the middle block's features.

``autocast``: the dtype the forward passes run in (None: float32). Each
training step enters ``torch.autocast`` anew around its forward pass only:
autocast keeps the low-precision copy of every weight until its region ends,
so one region around the whole loop would run every step with the first
step's weights (a model whose zero-initialised head never moves). For the
same reason :func:`fit` refuses to run inside an autocast region.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.device import autocast_to
from tokzoo.nn.gpt import GPT

__all__ = ["GPT_PRECISIONS", "RECIPE", "fit", "loss_note", "train_gpt", "nll_bits", "middle_features"]

#: a probe GPT's ``precision`` setting -> the autocast dtype of its forward passes
GPT_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

#: the training recipe's fixed parts (recorded in the protocol with the parameters)
RECIPE = {"optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.05 on matrices)", "warmup": "linear, 10% of steps",
          "schedule": "cosine to 10% of lr", "grad_clip": 1.0, "batches": "uniform with replacement, seeded"}


def fit(model: nn.Module, loss_at: Callable[[torch.Generator], Tensor], *, steps: int, lr: float, seed: int,
        on_step: Callable[[int, float | None], None] | None = None, read_every: int = 25,
        autocast: torch.dtype | None = None) -> list[float]:
    """Train ``model`` by :data:`RECIPE` for ``steps``: ``loss_at(generator)``
    draws a batch (seeded, with the generator) and returns its loss. The loss
    of every step is kept on the device and returned at the end; ``on_step(s,
    loss)`` gets it as a number every ``read_every`` steps and at the last one
    (None between: reading it waits for the device). ``autocast``: see the
    module docstring."""
    device = next(model.parameters()).device
    if torch.is_autocast_enabled(device.type):
        raise RuntimeError("fit() runs inside a torch.autocast region, whose cast weights would stay those of "
                           "the first step: pass autocast=<dtype> to fit instead")
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warm = max(1, steps // 10)

    def lr_at(s: int) -> float:
        if s < warm:
            return lr * (s + 1) / warm
        t = (s - warm) / max(1, steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    history: Tensor | None = None
    model.train()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        with autocast_to(device, autocast):  # the forward only, entered anew each step
            loss = loss_at(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if history is None:
            history = torch.zeros(steps, dtype=torch.float32, device=loss.device)
        history[s] = loss.detach()
        if on_step:
            on_step(s, float(history[s]) if (s + 1) % read_every == 0 or s + 1 == steps else None)
    model.eval()
    return history.tolist() if history is not None else []


def loss_note(loss: float | None) -> dict[str, str]:
    """What :func:`fit`'s ``on_step`` loss adds to a progress bar: its note, when it was read."""
    return {} if loss is None else {"note": f"loss {loss:.3f}"}


def train_gpt(model: GPT, ids: Tensor, labels: Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
              on_step: Callable[[int, float | None], None] | None = None,
              autocast: torch.dtype | None = None) -> list[float]:
    """Train ``model`` on token ids ``[N, L]`` with class ``labels [N]`` (CPU
    tensors); returns the loss (nats per token) of every step."""
    dev = model.cos.device

    def loss_at(gen: torch.Generator) -> Tensor:
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        x, y = ids[idx].to(dev), labels[idx].to(dev).long()
        drop = torch.rand(batch_size, generator=gen) < model.cfg.class_dropout
        y = torch.where(drop.to(dev), torch.full_like(y, model.null_class), y)
        logits = model(y, x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x.reshape(-1))

    return fit(model, loss_at, steps=steps, lr=lr, seed=seed, on_step=on_step, autocast=autocast)


@torch.no_grad()
def nll_bits(model: GPT, ids: Tensor, labels: Tensor, batch_size: int = 64,
             autocast: torch.dtype | None = None) -> Tensor:
    """Teacher-forced negative log-likelihood of each sequence, in bits (float64
    ``[N]``); under ``autocast`` the body runs in that dtype and the head in
    float32 (a bf16 logit of 10 is off by up to 0.03 nats)."""
    model.eval()
    dev = model.cos.device
    out = []
    for s in range(0, len(ids), batch_size):
        x, y = ids[s:s + batch_size].to(dev), labels[s:s + batch_size].to(dev).long()
        with autocast_to(dev, autocast):
            h = model.hidden(y, x[:, :-1])
        logp = torch.log_softmax(model.head(h.float()).double(), dim=-1)
        tok = logp.gather(-1, x[..., None])[..., 0]
        out.append((-tok.sum(1) / math.log(2)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def middle_features(model: GPT, ids: Tensor, batch_size: int = 64, autocast: torch.dtype | None = None) -> Tensor:
    """GigaTok's AR-feature probe input: the hidden states after the middle
    block (``depth // 2``), null class prefix, mean over the token positions (``[N, width]``)."""
    model.eval()
    dev = model.cos.device
    out = []
    for s in range(0, len(ids), batch_size):
        x = ids[s:s + batch_size].to(dev)
        null = torch.full((len(x),), model.null_class, dtype=torch.long, device=dev)
        with autocast_to(dev, autocast):
            h = model.hidden(null, x, upto=max(1, model.cfg.depth // 2))
        out.append(h[:, 1:].float().mean(1).cpu())
    return torch.cat(out)
