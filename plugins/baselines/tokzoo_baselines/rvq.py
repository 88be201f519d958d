"""Residual vector quantization with one shared codebook (VILA-U style).

Depth ``D``: the residual left by each level is quantized by the next, all
from the same codebook; the quantized feature is the sum. The codebook is
updated by EMA from every level's assignments, and codes unused for
``restart_every`` steps are moved onto current features.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tokzoo.api import Codes, QuantizerOutput, Quantizer
from tokzoo.nn import VectorQuantizer, batch_perplexity, code_counts


class ResidualVQ(Quantizer):
    """Features ``[B,dim,h,w]`` -> D levels of codes ``depth0..depth{D-1}``."""

    layout = "residual"

    def __init__(self, codebook_size: int = 16384, dim: int = 256, depth: int = 4, beta: float = 0.25,
                 decay: float = 0.99, restart_unused: bool = True, restart_every: int = 100):
        super().__init__()
        self.dim, self.depth, self.beta, self.codebook_size = dim, depth, beta, codebook_size
        self.vq = VectorQuantizer(codebook_size, dim, beta, l2_norm=False, ema=True, decay=decay,
                                  restart_unused=restart_unused, restart_every=restart_every)
        self.names = [f"depth{d}" for d in range(depth)]

    @property
    def vocab(self) -> dict[str, int]:
        return {n: self.codebook_size for n in self.names}

    def forward(self, features: Tensor) -> QuantizerOutput:
        B, C, h, w = features.shape
        z = features.permute(0, 2, 3, 1).reshape(-1, C).float()
        if self.training and self.vq.restart_unused:
            self.vq.maybe_restart(z.detach())
        residual = z.detach()
        total = torch.zeros_like(residual)
        idxs, inputs = [], []
        for _ in range(self.depth):
            idx = self.vq.nearest(residual)
            q = self.vq.codebook()[idx]
            idxs.append(idx)
            inputs.append(residual)
            total = total + q
            residual = residual - q
        losses: dict[str, Tensor] = {}
        if self.training:
            losses["commitment"] = self.beta * torch.nn.functional.mse_loss(z, total.detach())
            all_idx = torch.cat(idxs)
            self.vq.ema_update(torch.cat(inputs), all_idx)
            if self.vq.restart_unused:
                self.vq.usage_since_restart += code_counts(all_idx, self.codebook_size)
                self.vq.steps_since_restart += 1
        quantized = (z + (total - z).detach()).reshape(B, h, w, C).permute(0, 3, 1, 2).contiguous()
        codes = Codes({n: i.reshape(B, h, w) for n, i in zip(self.names, idxs)}, self.vocab, "residual")
        stats = {f"perplexity/{n}": batch_perplexity(i, self.codebook_size) for n, i in zip(self.names, idxs)}
        return QuantizerOutput(quantized.to(features.dtype), codes, losses, stats)

    def lookup(self, codes: Codes) -> Tensor:
        cb = self.vq.codebook()
        total = sum(cb[codes.levels[n]] for n in self.names)
        return total.permute(0, 3, 1, 2).contiguous()
